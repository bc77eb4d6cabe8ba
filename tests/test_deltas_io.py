"""Streaming checkpoint I/O: reading, writing, validation and hub resolution."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from deltalab.errors import CheckpointError
from deltalab.tensors.blocks import row_chunks
from deltalab.tensors.format import read_header
from deltalab.tensors.hashing import Sha256
from deltalab.tensors.hub import resolve_checkpoint
from deltalab.tensors.pairing import pair_tensors
from deltalab.tensors.reader import Checkpoint
from deltalab.tensors.writer import CheckpointWriter, SafetensorsWriter, copy_aux_files
from tests.deltas_fixtures import build, save, state_dict


@pytest.fixture(scope="module")
def llama_dirs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("io")
    model = build("llama")
    return {
        "fp32": save(model, tmp / "fp32"),
        "bf16_sharded": save(model, tmp / "bf16", torch.bfloat16, shard="20KB"),
        "fp16": save(model, tmp / "fp16", torch.float16),
    }


@pytest.mark.parametrize("kind", ["fp32", "bf16_sharded", "fp16"])
def test_reader_matches_safetensors(llama_dirs, kind):
    ref = state_dict(llama_dirs[kind])
    ckpt = Checkpoint(llama_dirs[kind])
    if kind == "bf16_sharded":
        assert len(ckpt.files) > 1 and (llama_dirs[kind] / "model.safetensors.index.json").exists()
    assert set(ckpt.names) == set(ref)
    for name, tensor in ref.items():
        got = ckpt.read(name).view(tensor.shape)
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name
        # any element range, converted to fp32 for the math
        n = tensor.numel()
        a, b = n // 3, n // 3 + 17
        assert torch.equal(ckpt.read_f32(name, a, b), tensor.reshape(-1)[a:b].float())


def test_tied_lm_head_resolves_to_embedding(tmp_path):
    path = save(build("gpt2"), tmp_path / "gpt2")
    ckpt = Checkpoint(path)
    assert "lm_head.weight" not in ckpt.tensors
    assert ckpt.resolve("lm_head.weight") == "transformer.wte.weight"
    assert torch.equal(ckpt.read("lm_head.weight"), ckpt.read("transformer.wte.weight"))


def test_truncated_file_names_file_and_tensor(tmp_path, llama_dirs):
    src = llama_dirs["fp32"] / "model.safetensors"
    bad = tmp_path / "bad"
    bad.mkdir()
    data = src.read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"bad/model.safetensors: tensor '.*' ends at"):
        Checkpoint(bad)
    (bad / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        Checkpoint(bad)


def test_corrupt_header_and_missing_shard(tmp_path, llama_dirs):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    data = bytearray((llama_dirs["fp32"] / "model.safetensors").read_bytes())
    data[8:12] = b"!!!!"  # breaks the JSON header
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        Checkpoint(bad)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for f in llama_dirs["bf16_sharded"].iterdir():
        if f.name != "model-00002-of-00003.safetensors":
            (sharded / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CheckpointError, match=r"shard model-00002-of-00003.safetensors .* missing"):
        Checkpoint(sharded)


def test_pickle_only_and_missing_directory(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle weights are not read"):
        Checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve_checkpoint(str(tmp_path / "nope" / "x"))


def test_writer_streams_chunks_and_rewrites_metadata(tmp_path):
    a, b = torch.randn(5, 7), torch.arange(10, dtype=torch.int64)
    c = torch.randn(3).bfloat16()
    plan = [("a", "F32", (5, 7)), ("b", "I64", (10,)), ("c", "BF16", (3,))]
    w = SafetensorsWriter(tmp_path / "x.safetensors", plan, {"status": "incomplete"}, reserve=256)
    for s in range(0, 35, 8):  # uneven chunks of the first tensor
        w.write("a", a.reshape(-1)[s : s + 8])
    w.write("b", b)
    w.write("c", c)
    w.close({"status": "done", "note": "x" * 100})
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert f.metadata() == {"status": "done", "note": "x" * 100}
        assert torch.equal(f.get_tensor("a"), a) and torch.equal(f.get_tensor("b"), b)
        assert torch.equal(f.get_tensor("c"), c)
    with pytest.raises(RuntimeError, match="expected 'a'"):
        SafetensorsWriter(tmp_path / "y.safetensors", plan).write("b", b)


def test_writer_takes_zero_size_tensors_anywhere_in_the_plan(tmp_path):
    """A 0-element tensor first, between and last: its (empty) writes are accepted in any
    position and the others still have to come in plan order."""
    a = torch.randn(4)
    plan = [("e0", "F32", (0, 3)), ("a", "F32", (4,)), ("e1", "U8", (0,)), ("e2", "F32", (2, 0))]
    w = SafetensorsWriter(tmp_path / "x.safetensors", plan)
    w.write("e0", torch.zeros(0))
    w.write("a", a)
    w.write("e2", torch.zeros(0))  # out of order, but holds nothing
    w.write("e1", torch.zeros(0, dtype=torch.uint8))
    w.close()
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert torch.equal(f.get_tensor("a"), a)
        assert f.get_tensor("e0").shape == (0, 3) and f.get_tensor("e2").shape == (2, 0)
    w = SafetensorsWriter(tmp_path / "y.safetensors", plan)
    with pytest.raises(RuntimeError, match="got tensor 'e0', expected 'a'"):
        w.write("e0", torch.zeros(1))  # elements for a tensor that holds none
    with pytest.raises(RuntimeError, match="tensor 'e1' is torch.float32, planned U8"):
        w.write("e1", torch.zeros(0))
    w.abort()


def _hash_in_forked_child(queue) -> None:
    h = Sha256()
    h.update(torch.arange(1000, dtype=torch.int64))
    queue.put(h.hexdigest())


def test_sha256_works_in_a_forked_child_of_a_process_that_hashed(tmp_path):
    """The hashing thread pool is per process: a child forked after the parent's pool thread
    started (mutmut's and DataLoader's workers) gets its own instead of waiting forever."""
    import hashlib
    import multiprocessing

    data = torch.arange(1000, dtype=torch.int64)
    parent = Sha256()
    parent.update(data)  # starts the parent's worker thread
    expected = hashlib.sha256(data.numpy().tobytes()).hexdigest()
    assert parent.hexdigest() == expected
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_hash_in_forked_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("Sha256 hung in a forked child")
    assert child.exitcode == 0 and queue.get(timeout=5) == expected


def test_sharded_writer_round_trips_through_transformers(tmp_path, llama_dirs):
    from transformers import AutoModelForCausalLM

    src = Checkpoint(llama_dirs["fp32"])
    plan = [(n, i.dtype, i.shape) for n, i in src.tensors.items()]
    writer = CheckpointWriter(tmp_path, plan, max_shard_bytes=30_000)
    for name, info in src.tensors.items():
        for start, stop in row_chunks(info.shape[0], info.numel // info.shape[0], 100):
            writer.write(name, src.read(name, start, stop))
    writer.close()
    copy_aux_files(llama_dirs["fp32"], tmp_path)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    ref = state_dict(llama_dirs["fp32"])
    for name, p in model.state_dict().items():
        assert torch.equal(p, ref[name]), name


def test_row_chunks_cover_whole_rows_aligned_to_8():
    assert row_chunks(10, 4, 1000) == [(0, 40)]
    chunks = row_chunks(100, 3, 50)
    assert chunks[0][0] == 0 and chunks[-1][1] == 300
    assert all(a % 8 == 0 and a % 3 == 0 for a, _ in chunks)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(chunks))


def test_pair_tensors_rejects_mismatched_architectures(tmp_path):
    llama = Checkpoint(save(build("llama"), tmp_path / "llama"))
    qwen = Checkpoint(save(build("qwen2"), tmp_path / "qwen"))  # q/k/v biases in addition
    with pytest.raises(CheckpointError, match=r"qwen/model.safetensors: tensor '.*bias' is not"):
        pair_tensors(llama, qwen)
    with pytest.raises(CheckpointError, match=r"tensor '.*bias' of the base .* is missing"):
        pair_tensors(qwen, llama)
    bigger = Checkpoint(save(build("llama", vocab=104), tmp_path / "llama104"))
    resized = pair_tensors(llama, bigger)
    assert resized["model.embed_tokens.weight"] == 104 and resized["lm_head.weight"] == 104
    assert resized["model.norm.weight"] is None


def test_read_header_rejects_bad_dtype_sizes(tmp_path):
    header = json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 12)
    with pytest.raises(CheckpointError, match="corrupt header entry for tensor 't'"):
        read_header(path)


def test_hub_id_offline_without_cache_is_a_clear_error(tmp_path):
    """Never touches the network: offline mode and an empty cache."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = (
        "from deltalab.cli import main; import sys; "
        "sys.exit(main(['task-vector', '--base', 'some-org/some-model', '--finetuned', "
        f"'some-org/other', '--top-ratio', '0.3', '--out', r'{tmp_path / 'v.safetensors'}']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "some-org/some-model: not a local directory" in proc.stderr
    assert "hf download some-org/some-model" in proc.stderr
    assert not (tmp_path / "v.safetensors").exists()
