"""The methods section: SFT-vs-RLVR contrast by hand, verdicts, the stage and the CLI.

The checkpoints are hand-made (tests/deltas_fixtures.contrast_tensors): two 4×4 tensors whose
deltas are dyadic, so every expected number below is written out from the fixture's docstring.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deltalab.cli import main as cli_main
from deltalab.deltas.analysis import DeltaInput, analyze
from deltalab.deltas.claims import CLAIMS
from deltalab.deltas.contrasts import check_contrast, contrasts
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.deltas.report import write_report
from deltalab.deltas.summary import claims, metrics, summarize, summary
from deltalab.errors import CheckpointError, ConfigError
from deltalab.tensors.reader import Checkpoint
from tests.deltas_fixtures import UP, Q, contrast_tensors, save_tensors
from tests.tiny import tiny_raw

ROOT = Path(__file__).parents[1]

# ‖τ‖² by hand (see contrast_tensors)
SFT_UP, SFT_Q = 4 * 0.5**2 + 12 * 0.125**2, 16 * 0.25**2
RL_UP, RL_Q = 4 * 2**-12 + 4 * 2**-14 + 4 * 2**-20, 16 * 2**-18
SFT2, RL2 = SFT_UP + SFT_Q, RL_UP + RL_Q
# top 25% = 4 entries per tensor: row 0 of each (largest in up; flat-index tie-break in q)
SFT2_S, RL2_S = 4 * 0.5**2 + 4 * 0.25**2, 4 * 2**-12 + 4 * 2**-18
DOT, DOT_S = 16 * 0.25 * 2**-9, 4 * 0.25 * 2**-9  # up contributes 0: its signs cancel
CONTRAST = {
    "norm_a": math.sqrt(SFT2),
    "norm_b": math.sqrt(RL2),
    "magnitude_ratio": math.sqrt(SFT2 / RL2),  # 41.25
    "magnitude_ratio_sparse": math.sqrt(SFT2_S / RL2_S),
    "cosine": DOT / math.sqrt(SFT2 * RL2),
    "cosine_sparse": DOT_S / math.sqrt(SFT2_S * RL2_S),
    "opposite_sign": 6 / 32,  # 2 per row in up rows 0–2; q agrees
    "opposite_sign_sparse": 2 / 32,  # up row 0, kept by both
    "opposite_sign_of_both": 6 / 28,  # up row 3 of τ_rl is 0
    "opposite_sign_of_both_sparse": 2 / 8,
    "both_nonzero": 28 / 32,
    "both_kept": 8 / 32,
    "mask_jaccard": 1.0,
    "mask_jaccard_random": 0.25 / 1.75,
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("contrast")
    return {k: save_tensors(v, tmp / k) for k, v in contrast_tensors().items()}


METHODS = {"methods": {"sft": "sft", "rl": "rlvr"}}  # declared, as the pipeline's study does


def run(ckpts: dict[str, Path], order=("sft", "rl"), **params):
    base = Checkpoint(ckpts["base"])
    deltas = [DeltaInput(k, base, Checkpoint(ckpts[k])) for k in order]
    params = {"top_ratio": 0.25, "contrast": [("sft", "rl")]} | METHODS | params
    return analyze(deltas, AnalyzeDeltasParams(**params), progress=False)


def test_contrast_numbers_by_hand(ckpts):
    c = contrasts(run(ckpts))
    assert list(c) == ["sft_vs_rl"] and (c["sft_vs_rl"]["a"], c["sft_vs_rl"]["b"]) == ("sft", "rl")
    total = c["sft_vs_rl"]["total"]
    assert total.keys() == CONTRAST.keys()
    for key, expected in CONTRAST.items():
        assert total[key] == pytest.approx(expected, rel=1e-6), key
    up, q = c["sft_vs_rl"]["modules"]["mlp_up"], c["sft_vs_rl"]["modules"]["attn_q"]
    assert up["magnitude_ratio"] == pytest.approx(math.sqrt(SFT_UP / RL_UP), rel=1e-6)
    assert q["magnitude_ratio"] == pytest.approx(math.sqrt(SFT_Q / RL_Q), rel=1e-6)
    assert (up["opposite_sign"], q["opposite_sign"]) == (6 / 16, 0.0)
    assert up["cosine"] == pytest.approx(0.0, abs=1e-12) and q["cosine"] == pytest.approx(1.0)


def test_contrast_orientation_does_not_depend_on_the_analysis_order(ckpts):
    """The analysis pairs (rl, sft) here; the contrast still reports ‖τ_sft‖/‖τ_rl‖, and the
    reverse contrast its inverse."""
    result = run(ckpts, order=("rl", "sft"), contrast=[("sft", "rl"), ("rl", "sft")])
    assert list(result.pairs) == ["rl_vs_sft"]
    c = contrasts(result)
    assert c["sft_vs_rl"]["total"]["magnitude_ratio"] == pytest.approx(math.sqrt(SFT2 / RL2))
    assert c["rl_vs_sft"]["total"]["magnitude_ratio"] == pytest.approx(math.sqrt(RL2 / SFT2))
    assert c["rl_vs_sft"]["total"]["norm_a"] == pytest.approx(math.sqrt(RL2))
    sparse = math.sqrt(SFT2_S / RL2_S)
    assert c["sft_vs_rl"]["total"]["magnitude_ratio_sparse"] == pytest.approx(sparse)
    assert c["sft_vs_rl"]["total"]["opposite_sign"] == pytest.approx(6 / 32)


def test_update_sparsity_rank_and_top_groups_by_hand(ckpts):
    result = run(ckpts)
    s = summary(result)
    rl, sft = s["deltas"]["rl"], s["deltas"]["sft"]
    assert (rl["method"], sft["method"]) == ("rlvr", "sft")
    assert rl["total"]["frac_zero"] == 4 / 32 and rl["total"]["frac_unchanged_atol"] == 4 / 32
    assert rl["total"]["frac_unchanged_bf16"] == 24 / 32  # up rows 2–3 and all of q
    assert sft["total"]["frac_unchanged_bf16"] == 0.0
    # τ_rl up: rank 2, σ = (|row 0|, |rows 1–2|); q: rank 1
    sig = torch.tensor([2.0 * 2**-6, 2 * math.sqrt(2**-14 + 2**-20)], dtype=torch.float64)
    p = sig / sig.sum()
    eff_up = math.exp(-float((p * p.log()).sum()))
    assert rl["total"]["effective_rank_frac"] == pytest.approx((eff_up / 4 + 1 / 4) / 2, rel=1e-4)
    assert sft["total"]["effective_rank_frac"] == pytest.approx(1 / 4, rel=1e-4)
    energy = summarize(result).deltas["sft"].top("module", "energy_share")
    assert [k for k, _ in energy] == ["mlp_up", "attn_q"]
    assert energy[0][1] == pytest.approx(SFT_UP / SFT2)
    rel = summarize(result).deltas["rl"].top("layer_module", "rel_norm")
    assert [k for k, _ in rel] == [(0, "mlp_up"), (1, "attn_q")]
    assert rel[0][1] == pytest.approx(math.sqrt(RL_UP / 16))


def test_claims_and_metrics_json(ckpts):
    result = run(ckpts)
    rows = {(r["claim"], r["subject"]): r for r in claims(result)}
    assert {k: r["verdict"] for k, r in rows.items()} == {
        ("magnitude_ratio", "sft_vs_rl"): "holds",  # 41.25 in [10, 100]
        ("opposite_sign", "sft_vs_rl"): "does not hold",  # 18.75% < 25%
        ("opposite_sign_sparse", "sft_vs_rl"): "holds",  # 6.25% ≤ 15%
        ("rl_unchanged", "rl"): "holds",  # 75% in [70%, 95%]
        ("sft_unchanged", "sft"): "partly",  # 0% < 6%
        ("rl_rank", "rl"): "partly",  # 36% in [25%, 50%)
    }
    assert rows["magnitude_ratio", "sft_vs_rl"]["value"] == pytest.approx(math.sqrt(SFT2 / RL2))
    m = metrics(result)
    assert m["contrast"]["sft_vs_rl"]["magnitude_ratio"] == pytest.approx(math.sqrt(SFT2 / RL2))
    assert m["contrast"]["sft_vs_rl"]["opposite_sign_sparse"] == pytest.approx(2 / 32)
    assert m["claims"]["magnitude_ratio"]["sft_vs_rl"] == {
        "value": pytest.approx(math.sqrt(SFT2 / RL2)),
        "verdict": 1.0,
    }
    assert m["claims"]["opposite_sign"]["sft_vs_rl"]["verdict"] == 0.0
    assert m["claims"]["sft_unchanged"]["sft"] == {"value": 0.0, "verdict": 0.5}
    # no contrast, no methods: every claim is n/a and none reaches the metrics
    bare = run(ckpts, contrast=[], methods={})
    assert {r["verdict"] for r in claims(bare)} == {"n/a"}
    assert "claims" not in metrics(bare) and "contrast" not in metrics(bare)


_CLAIM = {c.key: c for c in CLAIMS}


def test_report_section(ckpts, tmp_path):
    write_report(run(ckpts), tmp_path, title="t")
    report = (tmp_path / "report.md").read_text()
    assert "## Methods compared: SFT, DPO, RLVR" in report
    assert "### sft vs rl: head-to-head" in report
    assert "### Published numbers beside ours" in report
    assert "would round away" in report  # the fp32 caveat
    row = next(line for line in report.splitlines() if "differ ~30×" in line)
    assert "| 41.3× |" in row and "holds if 10 ≤ x ≤ 100" in row and "**holds**" in row
    row = next(line for line in report.splitlines() if "~45%" in line)
    assert "| 18.8% |" in row and "**does not hold**" in row
    assert (tmp_path / "methods.png").stat().st_size > 1000
    summ = json.loads((tmp_path / "summary.json").read_text())
    assert summ["contrast"]["sft_vs_rl"]["total"]["magnitude_ratio"] == pytest.approx(41.25, 1e-3)
    assert {r["claim"] for r in summ["claims"]} == set(_CLAIM)


def test_check_contrast():
    bases = {"sft_tulu": "pretrain", "sft_gsm8k": "sft_tulu", "rlvr": "sft_tulu"}
    check_contrast(bases, [("sft_gsm8k", "rlvr")])
    with pytest.raises(ConfigError, match=r"'dpo' is not a delta here"):
        check_contrast(bases, [("sft_gsm8k", "dpo")])
    with pytest.raises(ConfigError, match=r"different bases \(pretrain, sft_tulu\)"):
        check_contrast(bases, [("sft_tulu", "rlvr")])
    with pytest.raises(ValueError, match="with itself"):
        AnalyzeDeltasParams(contrast=[("rlvr", "rlvr")])


# ---------------------------------------------------------------------------------------------
# The stage: models/<cond>/seed<seed>/<name>/ for every checkpoint


def _stage():
    spec = importlib.util.spec_from_file_location(
        "analyze_deltas_stage", ROOT / "stages" / "analyze_deltas.py"
    )
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def _pipeline(root: Path, cond: str = "baseline", seed: int = 1, skip: str = "") -> None:
    t = contrast_tensors()
    sft_tulu = t["base"]
    ckpts = {
        "pretrain": {k: v - 2**-4 for k, v in sft_tulu.items()},
        "sft_tulu": sft_tulu,
        "sft_gsm8k": t["sft"],
        "rlvr": t["rl"],
        "dpo": {UP: t["sft"][UP], Q: t["sft"][Q] + 2**-10},  # all below half a bf16 step
    }
    for name, tensors in ckpts.items():
        if name != skip:
            save_tensors(tensors, root / "models" / cond / f"seed{seed}" / name)


def _params(overrides: dict, delta_seeds=(1,)):
    """The tiny profile on seed 1, `contrast` into the study, the rest into analyze_deltas."""
    from deltalab.config import parse_params

    overrides = dict(overrides)
    study = {"contrast": overrides.pop("contrast")} if "contrast" in overrides else {}
    return parse_params(
        tiny_raw(
            {
                "seeds": [0, 1],
                "delta_track": {"seeds": list(delta_seeds)},
                "analyze_deltas": overrides,
                "study": study,
            }
        )
    )


def test_stage_writes_contrast_metrics_and_report(tmp_path, monkeypatch):
    _pipeline(tmp_path)
    monkeypatch.chdir(tmp_path)
    _stage().main(_params({"top_ratio": 0.25}), "baseline", 1)
    m = json.loads((tmp_path / "metrics/deltas/baseline-1.json").read_text())
    assert set(m["deltas"]) == {"sft_tulu", "sft_gsm8k", "rlvr", "dpo"}
    assert set(m["pairs"]) == {"sft_gsm8k_vs_rlvr"}  # the only two deltas of one base
    c = m["contrast"]["sft_gsm8k_vs_rlvr"]
    assert c["magnitude_ratio"] == pytest.approx(math.sqrt(SFT2 / RL2), rel=1e-6)
    assert c["opposite_sign"] == 6 / 32 and c["opposite_sign_sparse"] == 2 / 32
    verdicts = {k: {s: v["verdict"] for s, v in d.items()} for k, d in m["claims"].items()}
    assert verdicts == {
        "magnitude_ratio": {"sft_gsm8k_vs_rlvr": 1.0},
        "opposite_sign": {"sft_gsm8k_vs_rlvr": 0.0},
        "opposite_sign_sparse": {"sft_gsm8k_vs_rlvr": 1.0},
        "rl_unchanged": {"rlvr": 1.0, "dpo": 0.5},  # dpo: 100% unchanged > 95%
        "sft_unchanged": {"sft_tulu": 0.5, "sft_gsm8k": 0.5},
        "rl_rank": {"rlvr": 0.5, "dpo": 0.0},  # dpo: q rank 1 (25%), up unchanged (0)
    }
    report = tmp_path / "reports/deltas/baseline-1"
    assert {"report.md", "tensors.csv", "layers.csv", "pairs.csv", "methods.png"} <= {
        p.name for p in report.iterdir()
    }
    text = (report / "report.md").read_text()
    assert "# Weight deltas: baseline, seed 1" in text
    assert "### sft_gsm8k vs rlvr: head-to-head" in text
    assert "`models/baseline/seed1/sft_tulu`" in text


@pytest.mark.parametrize(
    ("params", "delta_seeds", "error", "match"),
    [
        ({}, (1,), CheckpointError, r"'rlvr': models/baseline/seed1/rlvr: no such checkpoint"),
        (
            {"contrast": [["sft_gsm8k", "masked_dpo"]]},
            (1,),
            ConfigError,
            r"two different delta labels",
        ),
        ({"contrast": [["sft_tulu", "rlvr"]]}, (1,), ConfigError, r"different bases"),
    ],
)
def test_stage_fails_before_writing_anything(
    tmp_path, monkeypatch, params, delta_seeds, error, match
):
    _pipeline(tmp_path, skip="rlvr")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=match):
        _stage().main(_params(params, delta_seeds), "baseline", 1)
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "reports").exists()


def test_stage_command_line_exits_2_naming_the_missing_checkpoint(tmp_path):
    _pipeline(tmp_path, seed=0, skip="dpo")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(tiny_raw({"analyze_deltas": {"top_ratio": 0.25}}))
    )
    command = [sys.executable, str(ROOT / "stages/analyze_deltas.py")]
    proc = subprocess.run(
        [*command, "--cond", "baseline", "--seed", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: analyze_deltas@baseline-0: 'dpo': models/baseline/seed0/dpo" in proc.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "reports").exists()


# ---------------------------------------------------------------------------------------------
# `deltalab analyze`: the same section, contrasts from the command line


def test_cli_contrasts_every_pair_by_default(ckpts, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["analyze", "--base", str(ckpts["base"]), "--top-ratio", "0.25", "--quiet"]
    args += ["--finetuned", str(ckpts["sft"]), "--finetuned", str(ckpts["rl"]), "--out", str(out)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "sft_vs_rl: ‖τ_a‖/‖τ_b‖ = 41.3× (published ~30×): holds" in printed
    assert "rl: bf16-unchanged" not in printed  # no method declared: no per-method claim
    assert cli_main([*args, "--method", "rl=rlvr", "--method", "sft=sft"]) == 0
    printed = capsys.readouterr().out
    assert "rl: bf16-unchanged = 75.0% (published 70–95% unchanged): holds" in printed
    assert "### sft vs rl: head-to-head" in (out / "report.md").read_text()


def test_cli_contrast_and_method_flags(ckpts, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["analyze", "--base", str(ckpts["base"]), "--top-ratio", "0.25", "--quiet"]
    args += ["--finetuned", str(ckpts["sft"]), "--finetuned", str(ckpts["rl"])]
    args += ["--label", "a", "--label", "b", "--contrast", "b", "a", "--method", "b=dpo"]
    assert cli_main([*args, "--out", str(out)]) == 0
    summ = json.loads((out / "summary.json").read_text())
    assert summ["contrast"]["b_vs_a"]["total"]["magnitude_ratio"] == pytest.approx(
        math.sqrt(RL2 / SFT2)
    )
    assert summ["deltas"]["b"]["method"] == "dpo" and summ["deltas"]["a"]["method"] is None
    capsys.readouterr()
    assert cli_main([*args[:-5], "--contrast", "a", "x", "--out", str(tmp_path / "bad")]) == 2
    assert "'x' is not a delta here" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert cli_main([*args, "--method", "a=ppo", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
