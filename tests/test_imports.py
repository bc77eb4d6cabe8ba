"""Imported checkpoints: hub snapshots at pinned revisions (offline, from a stand-in cache in the
hub layout), manifests verified by every reader, `.bin` repositories, gated and remote-code
repositories, unpinned ids."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

from deltalab.errors import CheckpointError
from deltalab.models import load_causal_lm
from deltalab.tensors.imports import MANIFEST, import_checkpoint, resolve
from deltalab.tensors.reader import Checkpoint
from tests import standins
from tests.tiny import tiny_params

TULU_SFT = "allenai/Llama-3.1-Tulu-3-8B-SFT"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, used offline."""
    cache = tmp_path / "hf"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def _tulu_sft(cache: Path) -> tuple[str, Path]:
    rev = standins.revision(TULU_SFT)
    snap = standins.snapshot_dir(cache, TULU_SFT, rev)
    standins.write_checkpoint(snap, "llama", vocab_rows=128264)
    return rev, snap


def test_import_references_a_pinned_snapshot_and_readers_verify_it(hub_cache, tmp_path):
    rev, snap = _tulu_sft(hub_cache)
    out = tmp_path / "models/tulu3/seed0/sft"
    out.mkdir(parents=True)
    manifest = import_checkpoint(TULU_SFT, rev, out)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]  # referenced, not copied
    names = [f["name"] for f in manifest["files"]]
    assert "model.safetensors.index.json" in names and "model-00002-of-00002.safetensors" in names
    assert {"config.json", "tokenizer.json", "generation_config.json"} <= set(names)
    assert manifest["revision"] == rev and manifest["format"] == "safetensors"
    entry = next(f for f in manifest["files"] if f["name"] == "config.json")
    assert entry["size"] == (snap / "config.json").stat().st_size
    assert resolve(out) == snap
    # every reader goes through the manifest: the streaming reader and from_pretrained
    assert Checkpoint(resolve(out)).tensors["model.embed_tokens.weight"].shape == (128264, 16)
    model, tokenizer = load_causal_lm(out)
    assert model.config.vocab_size == 128264 and len(tokenizer) == 128256
    assert model.dtype == torch.float32  # fp32 on CPU, whatever the checkpoint's bf16


def test_a_changed_file_fails_every_reader_naming_it(hub_cache, tmp_path):
    rev, snap = _tulu_sft(hub_cache)
    out = tmp_path / "sft"
    out.mkdir()
    import_checkpoint(TULU_SFT, rev, out)
    original = (snap / "config.json").read_text()
    (snap / "config.json").write_text(json.dumps(json.loads(original) | {"rope_theta": 1.0}))
    with pytest.raises(CheckpointError, match=r"config\.json: changed since it was imported"):
        resolve(out)
    with pytest.raises(CheckpointError, match="changed since it was imported"):
        load_causal_lm(out)
    (snap / "config.json").write_text(original)
    assert resolve(out) == snap
    (snap / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors"):
        resolve(out)


def test_store_copy_puts_the_files_in_the_stage_output(hub_cache, tmp_path):
    rev, _ = _tulu_sft(hub_cache)
    out = tmp_path / "sft"
    out.mkdir()
    manifest = import_checkpoint(TULU_SFT, rev, out, store="copy")
    assert [f["name"] for f in manifest["stored"]] == [f["name"] for f in manifest["files"]]
    assert resolve(out) == out
    (out / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer.json: changed"):
        resolve(out)


def test_an_uncached_revision_offline_names_the_repo_and_how_to_fetch(hub_cache, tmp_path):
    _tulu_sft(hub_cache)
    other = "0" * 40
    with pytest.raises(CheckpointError, match=f"{TULU_SFT}@{other}: not in this machine's"):
        import_checkpoint(TULU_SFT, other, tmp_path)


def test_bin_only_repository_is_loaded_weights_only_and_converted(hub_cache, tmp_path):
    repo = "allenai/Llama-3.1-Tulu-3-8B-DPO"
    rev = standins.revision(repo)
    snap = standins.snapshot_dir(hub_cache, repo, rev)
    state = standins.write_checkpoint(snap, "llama", vocab_rows=128264)
    for f in snap.glob("*.safetensors*"):
        f.unlink()
    names = sorted(state)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    index = {}
    for k, part in enumerate(halves, 1):
        file = f"pytorch_model-0000{k}-of-00002.bin"
        torch.save({n: state[n] for n in part}, snap / file)
        index |= dict.fromkeys(part, file)
    (snap / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": index}))
    out = tmp_path / "dpo"
    out.mkdir()
    manifest = import_checkpoint(repo, rev, out)
    assert manifest["format"] == "bin"
    assert {f["name"] for f in manifest["files"]} >= {"pytorch_model-00001-of-00002.bin"}
    assert resolve(out) == out
    converted = Checkpoint(out)
    assert sorted(converted.tensors) == names
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.up_proj.weight"):
        assert torch.equal(converted.read(name).view(state[name].shape), state[name])
    model, _ = load_causal_lm(out)
    assert model.config.vocab_size == 128264


def test_a_pickle_that_is_not_plain_tensors_is_refused(hub_cache, tmp_path):
    repo = "someone/evil"
    rev = standins.revision(repo)
    snap = standins.snapshot_dir(hub_cache, repo, rev)
    standins.write_checkpoint(snap, "llama")
    for f in snap.glob("*.safetensors*"):
        f.unlink()
    torch.save({"w": torch.zeros(2), "payload": print}, snap / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        import_checkpoint(repo, rev, tmp_path)


def test_remote_code_is_refused_while_trust_remote_code_is_off(tmp_path):
    src = tmp_path / "custom"
    standins.write_checkpoint(src, "llama")
    config = json.loads((src / "config.json").read_text())
    config |= {"model_type": "my_custom_lm", "auto_map": {"AutoModelForCausalLM": "m.Model"}}
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError, match="runtime.trust_remote_code is off"):
        import_checkpoint(str(src), None, out)
    assert list(out.iterdir()) == []


def test_a_local_directory_needs_config_and_tokenizer(tmp_path):
    src = tmp_path / "local"
    standins.write_checkpoint(src, "qwen2")
    (src / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        import_checkpoint(str(src), None, tmp_path)
    (src / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        import_checkpoint(str(src), None, tmp_path)


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub answers for a gated repository without access."""

    def do_GET(self) -> None:  # the http.server API's name
        self.send_response(401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model meta-llama/x is restricted.")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Access to model is restricted."}')

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


def test_a_gated_repository_names_the_repo_and_hf_token_never_the_token(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setenv("HF_TOKEN", "hf_SECRETtokenVALUE123")
        with pytest.raises(CheckpointError) as err:
            import_checkpoint("meta-llama/Llama-3.1-8B", "a" * 40, tmp_path)
    finally:
        server.shutdown()
    message = str(err.value)
    assert "meta-llama/Llama-3.1-8B" in message and "HF_TOKEN" in message and "gated" in message
    assert "SECRET" not in message


def test_unpinned_hub_ids_are_named_by_key_and_refused_by_every_stage(tmp_path, capsys):
    """`revision: null` is "not yet pinned": valid params (a profile can name candidates), which
    `params check --pinned` and every stage refuse; a moving revision is a params error."""
    import yaml

    from deltalab.cli import main as cli_main
    from deltalab.errors import ConfigError

    study = {"checkpoints": {"base": {"recipe": "import", "source": {"id": "org/base"}}}}
    params = tiny_params({"study": study})
    assert params.unpinned() == [
        "study.checkpoints.base.source.revision: hub id 'org/base' is not pinned (got None); set "
        "the 40-hex commit it was studied at (the repository's history on the hub, or the "
        "snapshot `hf download org/base` resolves)"
    ]
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert cli_main(["params", "check", str(file)]) == 0
    assert cli_main(["params", "check", "--pinned", str(file)]) == 2
    assert "study.checkpoints.base.source.revision" in capsys.readouterr().err
    stage = subprocess.run(
        [sys.executable, str(ROOT / "stages/import.py"), "--params", str(file),
         "--checkpoint", "base", "--cond", "baseline", "--seed", "0"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert stage.returncode == 2
    assert "not runnable until pinned" in stage.stderr and "checkpoints.base.source" in stage.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written

    for moving in ("main", "v1.0", "A" * 40, "a" * 39):
        study["checkpoints"]["base"]["source"]["revision"] = moving
        with pytest.raises(ConfigError, match=r"study\.checkpoints\.base.*not pinned"):
            tiny_params({"study": study})
    study["checkpoints"]["base"]["source"] = {"id": "./local/dir", "revision": "a" * 40}
    with pytest.raises(ConfigError, match="local path; revisions are hub-only"):
        tiny_params({"study": study})
    per_cond = {"baseline": {"id": "org/a", "revision": "a" * 40}}
    study["checkpoints"]["base"]["source"] = per_cond
    with pytest.raises(ConfigError, match="one source per condition"):
        tiny_params({"study": study})
    study["checkpoints"]["base"]["source"] = {"id": "./local/dir"}
    params = tiny_params({"study": study})
    assert params.study.checkpoints["base"].source.id == "./local/dir" and not params.unpinned()


def test_unpinned_datasets_are_named_by_key():
    from deltalab.errors import ConfigError

    data = {"source": "hub", "gsm8k": {"name": "openai/gsm8k", "config": "main"}}
    assert tiny_params({"data": data}).unpinned() == [
        "data.gsm8k.revision: dataset 'openai/gsm8k' is not pinned (got None); set the 40-hex "
        "commit it was studied at (the repository's history on the hub, or the snapshot "
        "`hf download openai/gsm8k` resolves)"
    ]
    data["gsm8k"]["revision"] = "main"
    with pytest.raises(ConfigError, match=r"data\.gsm8k.*not pinned"):
        tiny_params({"data": data})
