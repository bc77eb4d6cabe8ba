"""`deltalab analyze --include/--exclude/--device`: selection before any read, device."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from deltalab.cli import main
from deltalab.deltas.analysis import DeltaInput, analyze
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.errors import ConfigError
from deltalab.tensors import reader as tensors_reader
from deltalab.tensors.reader import Checkpoint
from tests.deltas_fixtures import build, finetune, save

INCLUDE = [r"self_attn", r"mlp\.up_proj"]
EXCLUDE = [r"q_proj"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("sel")
    base = build("llama")
    return {
        "base": save(base, tmp / "base"),
        "sft": save(finetune(base, 1, 1e-2), tmp / "sft"),
        "rl": save(finetune(base, 2, 1e-3, density=0.2), tmp / "rl"),
    }


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Names of every tensor read from any checkpoint (data, not headers)."""
    names: list[str] = []
    original = tensors_reader.SafetensorsReader.read

    def read(self, name, *args, **kwargs):
        names.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(tensors_reader.SafetensorsReader, "read", read)
    return names


def run(paths, params=None, **kwargs):
    base = Checkpoint(paths["base"])
    deltas = [DeltaInput(k, base, Checkpoint(paths[k])) for k in ("sft", "rl")]
    return analyze(deltas, params or AnalyzeDeltasParams(), progress=False, **kwargs)


def all_names(paths) -> list[str]:
    return list(Checkpoint(paths["base"]).tensors)


def expected(paths) -> set[str]:
    return {
        n
        for n in all_names(paths)
        if any(re.search(p, n) for p in INCLUDE) and not any(re.search(p, n) for p in EXCLUDE)
    }


def cli_args(paths, out: Path, *extra: str) -> list[str]:
    args = ["analyze", "--base", str(paths["base"]), "--quiet", "--out", str(out)]
    args += ["--finetuned", str(paths["sft"]), "--finetuned", str(paths["rl"]), *extra]
    return args


def same(a: dict, b: dict) -> bool:
    """Rows equal value for value (NaN equals NaN)."""
    nan = lambda v: isinstance(v, float) and math.isnan(v)  # noqa: E731
    return a.keys() == b.keys() and all(a[k] == b[k] or (nan(a[k]) and nan(b[k])) for k in a)


def test_include_exclude_select_and_the_rest_is_never_read(ckpts, reads):
    want = expected(ckpts)
    # the selection exercises both includes, the exclude, and leaves tensors out
    assert any("mlp.up_proj" in n for n in want) and any("k_proj" in n for n in want)
    assert not any("q_proj" in n for n in want) and len(want) < len(all_names(ckpts))

    result = run(ckpts, include=INCLUDE, exclude=EXCLUDE)
    assert set(reads) == want
    assert {r["tensor"] for r in result.tensors} == want
    assert {r["tensor"] for r in result.pair_tensors} == want
    assert result.selected == {
        "include": INCLUDE,
        "exclude": EXCLUDE,
        "tensors": len(want),
        "of": len(all_names(ckpts)),
    }


def test_exclude_alone_keeps_everything_else(ckpts, reads):
    result = run(ckpts, exclude=[r"layers\.1\.", r"norm"])
    want = {n for n in all_names(ckpts) if "layers.1." not in n and "norm" not in n}
    assert set(reads) == want
    assert {r["tensor"] for r in result.tensors} == want
    assert result.selected["include"] == [] and result.selected["tensors"] == len(want)


def test_selected_numbers_equal_the_unfiltered_run(ckpts):
    full = run(ckpts)
    part = run(ckpts, include=INCLUDE, exclude=EXCLUDE)
    assert full.selected is None
    rows = {(r["delta"], r["tensor"]): r for r in full.tensors}
    assert len(part.tensors) == 2 * len(expected(ckpts))
    for r in part.tensors:
        assert same(r, rows[r["delta"], r["tensor"]]), r["tensor"]
    pair_rows = {(r["pair"], r["tensor"]): r for r in full.pair_tensors}
    for r in part.pair_tensors:
        assert same(r, pair_rows[r["pair"], r["tensor"]]), r["tensor"]


def test_cli_reports_the_selection(ckpts, tmp_path, capsys):
    out = tmp_path / "r"
    extra = [x for p in INCLUDE for x in ("--include", p)] + ["--exclude", EXCLUDE[0]]
    assert main(cli_args(ckpts, out, *extra)) == 0
    n, m = len(expected(ckpts)), len(all_names(ckpts))
    summ = json.loads((out / "summary.json").read_text())
    assert summ["selected"] == {"include": INCLUDE, "exclude": EXCLUDE, "tensors": n, "of": m}
    report = (out / "report.md").read_text()
    assert f"Selected tensors: {n} of {m}" in report and "--exclude `q_proj`" in report
    assert f"selected {n} of {m} tensors" in capsys.readouterr().out
    csv_tensors = {line.split(",")[1] for line in (out / "tensors.csv").read_text().split()[1:]}
    assert csv_tensors == expected(ckpts)

    plain = tmp_path / "plain"  # no filter: no `selected` key, no line (outputs as before)
    assert main(cli_args(ckpts, plain)) == 0
    assert "selected" not in json.loads((plain / "summary.json").read_text())
    assert "Selected tensors" not in (plain / "report.md").read_text()


def test_no_match_exits_2_naming_the_patterns_and_writes_nothing(ckpts, tmp_path, reads, capsys):
    out = tmp_path / "r"
    args = cli_args(ckpts, out, "--include", "nothing_here", "--exclude", "q_proj")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nothing_here" in err and "q_proj" in err and "no tensor" in err
    assert not out.exists() and reads == []
    # everything included, then everything excluded
    assert main(cli_args(ckpts, out, "--include", "layers", "--exclude", ".")) == 2
    assert not out.exists() and reads == []


def test_invalid_regex_is_a_config_error(ckpts, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(cli_args(ckpts, out, "--include", "(")) == 2
    assert "--include '('" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ConfigError, match=r"exclude '\['"):
        run(ckpts, exclude=["["])


def test_cuda_without_cuda_is_a_clear_error(ckpts, tmp_path, monkeypatch, reads, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r"
    assert main(cli_args(ckpts, out, "--device", "cuda")) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists() and reads == []
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run(ckpts, device="cuda")
    with pytest.raises(SystemExit):  # argparse: cpu or cuda only
        main(cli_args(ckpts, out, "--device", "tpu"))


def test_help_shows_an_include_example(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    help_text = capsys.readouterr().out
    assert "example:" in help_text and "deltalab analyze --base" in help_text
    assert "--include '" in help_text


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("chunk_elements", [2**25, 64])  # exact SVD; streamed randomized sketch
def test_cuda_equals_cpu(ckpts, chunk_elements):
    params = AnalyzeDeltasParams(chunk_elements=chunk_elements)
    cpu = run(ckpts, params, include=INCLUDE)
    gpu = run(ckpts, params, include=INCLUDE, device="cuda")
    assert len(cpu.tensors) == len(gpu.tensors) > 0
    for a, b in zip(cpu.tensors, gpu.tensors, strict=True):
        assert a["tensor"] == b["tensor"]
        for k, v in a.items():
            if isinstance(v, float) and not math.isnan(v):
                assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (a["tensor"], k)
            else:
                assert same({k: v}, {k: b[k]}), (a["tensor"], k)
