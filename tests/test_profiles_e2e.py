"""Every real-scale profile through `dvc repro`, offline, on stand-ins in the hub's own formats.

Each profile is pinned to stand-in revisions (tests/profiles.py), scaled down by overrides of
sizes and steps only (plus the CPU runtime), rendered, and run in a temporary copy of the
repository with HF_HUB_OFFLINE=1 and a Hugging Face cache holding the stand-ins at those
revisions (tests/standins.py): the real import, snapshot and dataset-loading code runs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests import standins
from tests.profiles import REAL, hub_sources, pinned
from tests.tiny import merged
from tests.workspace import commit_all, copy_repository, sh

pytestmark = pytest.mark.slow

CPU = {"runtime": {"device": "cpu", "bf16": False, "torch_threads": 2}}
GENERATE = {"max_new_tokens": 8, "batch_size": 8}
# Sizes and steps only.
SCALE_DOWN = {
    "domain-tokens-10b": {
        "seeds": [0],
        "data": {"tulu": {"limit": 40}, "tulu_val_size": 8},
        "sft_tulu": {"max_steps": 3, "batch_size": 4, "max_length": 96, "eval_steps": 3},
        "sft_gsm8k": {"max_steps": 3, "batch_size": 4, "max_length": 96, "eval_steps": 3,
                      "stop_eval_questions": 4, "stop_eval_max_new_tokens": 8,
                      "stop_eval_batch_size": 4},
        "evaluate": GENERATE | {"gsm8k_limit": 6, "probes_limit": 6, "probes_max_new_tokens": 8},
    },
    "tulu3-8b": {
        "evaluate": GENERATE | {"gsm8k_limit": 6},
        "behavior": GENERATE | {"questions": 4, "samples": 2, "n_bootstrap": 200},
    },
    "dots-qwen2.5-math-7b": {
        "data": {"sizes": {"search": 12}},
        "evaluate": GENERATE | {"gsm8k_limit": 6},
        # the one override that is not a size or a step: random stand-in weights cannot answer
        # consistently, so no query would pass the real profile's difficulty threshold
        "difficulty": GENERATE | {"votes": 2, "threshold": 1.0},
        "sample_queries": {"per_group": 2},
        "search": GENERATE | {"n_trials": 4, "population_size": 2, "votes": 2,
                              "ppl_batch_size": 4},
        "merge": {"n_bootstrap": 200},
    },
    "gemma3-270m-masks": {
        "data": {"sizes": {"prefs": 12}},
        "dpo": {"max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
                "max_length": 256, "eval_steps": 2, "val_fraction": 0.25},
        "masked_dpo": {"max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
                       "max_length": 256, "eval_steps": 2, "val_fraction": 0.25},
        "masks": {"fisher_samples": 2},
    },
}  # fmt: skip


def _gsm8k_rows(n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        a, b = 2 + i % 7, 3 + i % 5
        rows.append(
            {
                "question": f"Tom has {a} bags with {b} apples each. How many apples?",
                "answer": f"{a} bags of {b}: {a}*{b}={a * b}.\n#### {a * b}",
            }
        )
    return rows


def _conversation(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def write_datasets(cache: Path, params: dict) -> None:
    """Stand-ins of every hub dataset the profile names, at its pinned revision."""
    data = params["data"]
    if data.get("gsm8k"):
        splits = {"train": _gsm8k_rows(60, 0), "test": _gsm8k_rows(10, 100)}
        standins.write_dataset(cache, data["gsm8k"]["name"], data["gsm8k"]["revision"], splits,
                               config=data["gsm8k"]["config"])  # fmt: skip
    if data.get("tulu"):
        rows = [{"id": f"tulu-{i}", "messages": _conversation(r["question"], r["answer"]),
                 "source": "stand-in"} for i, r in enumerate(_gsm8k_rows(60, 200))]  # fmt: skip
        standins.write_dataset(cache, data["tulu"]["name"], data["tulu"]["revision"],
                               {"train": rows})  # fmt: skip
    if data.get("prefs"):
        rows = []
        for r in _gsm8k_rows(16, 300):
            rows.append({
                "chosen": _conversation(r["question"], r["answer"]),
                "rejected": _conversation(r["question"], r["answer"].replace("####", "#### 1")),
                "score_chosen": 8.0, "score_rejected": 2.0,
            })  # fmt: skip
        standins.write_dataset(cache, data["prefs"]["name"], data["prefs"]["revision"],
                               {"train": rows})  # fmt: skip
    if data.get("search_pool"):
        spec = data["search_pool"]
        rows = [{"problem": r["question"], "solution": r["answer"], "level": "Level 1"}
                for r in _gsm8k_rows(20, 400)]  # fmt: skip
        standins.write_dataset(cache, spec["name"], spec["revision"], {spec["split"]: rows})


# Per profile: repository id -> (family, parent id or None, finetune kind).
LINEAGES = {
    "domain-tokens-10b": {
        "zhengpu-berkeley/domain-token-gpt2-baseline-10b": ("gpt2-domain", None, None),
        "zhengpu-berkeley/domain-token-gpt2-mul-tokens-10b": ("gpt2-domain", None, None),
    },
    "tulu3-8b": {
        "meta-llama/Llama-3.1-8B": ("llama", None, None),
        "allenai/Llama-3.1-Tulu-3-8B-SFT": ("llama", "meta-llama/Llama-3.1-8B", "sft"),
        "allenai/Llama-3.1-Tulu-3-8B-DPO": ("llama", "allenai/Llama-3.1-Tulu-3-8B-SFT", "dpo"),
        "allenai/Llama-3.1-Tulu-3-8B": ("llama", "allenai/Llama-3.1-Tulu-3-8B-DPO", "rl"),
    },
    "dots-qwen2.5-math-7b": {
        "Qwen/Qwen2.5-Math-7B": ("qwen2", None, None),
        "Elliott/Qwen2.5-Math-7B-SFT": ("qwen2", "Qwen/Qwen2.5-Math-7B", "sft"),
        "rzzhan/ExGRPO-Qwen2.5-Math-7B-Zero": ("qwen2", "Qwen/Qwen2.5-Math-7B", "rl"),
    },
    "gemma3-270m-masks": {"google/gemma-3-270m-it": ("gemma3", None, None)},
}
FINETUNE = {"sft": (0.05, 1.0), "dpo": (0.01, 0.5), "rl": (0.01, 0.05)}  # (scale, density)


def write_checkpoints(cache: Path, profile: str, params: dict) -> None:
    revisions = {s["id"]: s["revision"] for s in hub_sources(params) if "id" in s}
    states: dict[str, dict] = {}
    for seed, (repo, (family, parent, kind)) in enumerate(LINEAGES[profile].items()):
        snap = standins.snapshot_dir(cache, repo, revisions[repo])
        state, rows, overrides = None, None, {}
        if parent is not None:
            scale, density = FINETUNE[kind]
            grow = 8 if repo.startswith("allenai/") and parent.startswith("meta-llama/") else 0
            state = standins.finetune(states[parent], seed, scale, density, extra_rows=grow)
            rows = state["model.embed_tokens.weight"].shape[0]
            if repo == "Elliott/Qwen2.5-Math-7B-SFT":  # as the real one: other rope, context
                overrides = {"rope_theta": 40000.0, "max_position_embeddings": 16384}
        states[repo] = standins.write_checkpoint(
            snap, family, state=state, vocab_rows=rows, seed=seed, config_overrides=overrides
        )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profiles")


def _run_profile(base: Path, profile: str) -> tuple[Path, str, float]:
    work = base / profile
    repo, cache = work / "repo", work / "hf"
    repo.mkdir(parents=True)
    copy_repository(repo)
    params = merged(merged(pinned(profile), SCALE_DOWN[profile]), CPU)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_datasets(cache, params)
    write_checkpoints(cache, profile, params)
    env = {"HF_HOME": str(cache), "HF_HUB_CACHE": str(cache / "hub")}
    sh(repo, "python", "tools/render_pipeline.py", "--write", env=env)
    commit_all(repo, profile)
    start = time.time()
    out = sh(repo, "dvc", "repro", env=env)
    return repo, out.stdout, time.time() - start


@pytest.mark.parametrize("profile", REAL)
def test_profile_runs_end_to_end_on_stand_ins(base, profile):
    repo, _, seconds = _run_profile(base, profile)
    print(f"{profile}: dvc repro {seconds:.0f} s")
    dag = sh(repo, "dvc", "dag").stdout
    print(dag)
    env = {"HF_HOME": str(base / profile / "hf"), "HF_HUB_CACHE": str(base / profile / "hf/hub")}
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status", env=env).stdout
    CHECKS[profile](repo)


def _manifest(repo: Path, member: str, name: str) -> dict:
    return json.loads((repo / "models" / member / name / "import.json").read_text())


def _json(repo: Path, rel: str) -> dict:
    return json.loads((repo / rel).read_text())


def _check_domain_tokens(repo: Path) -> None:
    for cond in ("baseline", "mul_tokens"):
        manifest = _manifest(repo, f"{cond}/seed0", "pretrain")
        assert manifest["id"].endswith(cond.replace("_", "-") + "-10b")
        for name in ("sft_tulu", "sft_gsm8k"):
            config = _json(repo, f"models/{cond}/seed0/{name}/config.json")
            assert config["vocab_size"] == 50349
        tokenizer = _json(repo, f"models/{cond}/seed0/sft_gsm8k/tokenizer.json")
        added = {a["content"]: a["id"] for a in tokenizer["added_tokens"]}
        assert added["<MUL_6_9_54>"] == 50342  # the original study's ids, kept through SFT
    compare = _json(repo, "metrics/compare.json")
    assert compare["sft_gsm8k"]["gsm8k"]["n"] == 6
    deltas = _json(repo, "metrics/deltas/baseline-0.json")
    assert set(deltas["deltas"]) == {"sft_tulu", "sft_gsm8k"}


def _check_tulu(repo: Path) -> None:
    for name in ("base", "sft", "dpo", "rlvr"):
        manifest = _manifest(repo, "tulu3/seed0", name)
        assert manifest["format"] == "safetensors" and manifest["store"] == "reference"
        assert "model.safetensors.index.json" in {f["name"] for f in manifest["files"]}
        # referenced, not copied: the stage output is the manifest alone
        assert [p.name for p in (repo / "models/tulu3/seed0" / name).iterdir()] == ["import.json"]
    deltas = _json(repo, "metrics/deltas/tulu3-0.json")["deltas"]
    assert set(deltas) == {"sft", "dpo", "rlvr_from_dpo", "rlvr_from_sft"}
    # the stand-ins' fine-tunes touch 100% (SFT), 50% (DPO) and 5% (RL) of the entries
    unchanged = {k: v["total"]["frac_unchanged_bf16"] for k, v in deltas.items()}
    assert unchanged["sft"] < 0.1 and 0.4 < unchanged["dpo"] < 0.7
    assert unchanged["rlvr_from_dpo"] > 0.9
    behavior = _json(repo, "metrics/behavior/tulu3-0.json")
    assert set(behavior["models"]) == {"sft", "dpo", "rlvr"}
    assert set(behavior["comparisons"]) == {"dpo_vs_sft", "rlvr_vs_dpo", "rlvr_vs_sft"}
    report = (repo / "reports/deltas/tulu3-0/report.md").read_text()
    assert "Checkpoints stored in bf16" in report  # the real dtype, not "fp32"
    assert "| `model.embed_tokens.weight` | 128256 | 128264 |" in report  # the vocabulary rule


def _check_dots(repo: Path) -> None:
    vectors = _json(repo, "metrics/vectors/dots-0.json")
    assert vectors["sft"]["top_ratio"] == 0.3 and vectors["rlvr"]["top_ratio"] == 0.3
    # the stand-ins' SFT moves every entry by 5% of a std, the RL one 5% of them by 1%
    assert vectors["norm_ratio_sft_rlvr"] > 10
    search = _json(repo, "metrics/search/dots-0.json")
    assert search["trials"] == 4 and 0.5 <= search["chosen"]["scale_sft"] <= 2.0
    trials = (repo / "reports/search/dots-0/trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 4
    merge = _json(repo, "metrics/merge/dots-0.json")
    assert set(merge["accuracy"]) == {"dense_1_1", "merged", "rlvr", "sft", "sparse_1_1",
                                      "ties_1_1", "dare_ties_1_1", "ram_1_1"}  # fmt: skip
    assert merge["n_questions"] == 6
    merged_config = _json(repo, "models/dots/seed0/merged/config.json")
    rope = merged_config.get("rope_theta") or merged_config["rope_parameters"]["rope_theta"]
    assert rope == 10000.0  # the merge keeps the base's config...
    assert merged_config["max_position_embeddings"] == 4096
    assert merged_config["vocab_size"] == 152064  # ...and Qwen's 152064 config rows


def _check_gemma(repo: Path) -> None:
    masks = _json(repo, "metrics/masks/gemma3-0.json")
    assert {"magnitude", "momentum", "fisher", "random"} <= set(json.dumps(masks).split('"'))
    masked = _json(repo, "metrics/masked_dpo/gemma3-0.json")
    runs = ("masked_dpo", "masked_dpo_random")
    assert {masked[n]["mask"] for n in runs} == {"momentum", "random"}
    assert all(masked[n]["frozen_changed"] == 0 for n in runs)
    assert masked["masked_dpo"]["trainable"] > 0
    config = _json(repo, "models/gemma3/seed0/dpo/config.json")
    assert config["model_type"] == "gemma3_text" and config["vocab_size"] == 262144
    assert config["layer_types"] == ["sliding_attention", "full_attention"]
    prefs = (repo / "data/prepared/prefs/train.jsonl").read_text().splitlines()
    first = json.loads(prefs[0])
    assert first["prompt"].startswith("Tom has") and "####" in first["chosen"]  # message lists


CHECKS = {
    "domain-tokens-10b": _check_domain_tokens,
    "tulu3-8b": _check_tulu,
    "dots-qwen2.5-math-7b": _check_dots,
    "gemma3-270m-masks": _check_gemma,
}


def test_every_full_profile_checks_and_dry_runs(tmp_path):
    """Each profile as written (unpinned candidates included): `deltalab params check` passes,
    naming what is not yet pinned, and a dry run walks its whole declared graph (`--force`: on a
    fresh checkout DVC 3.67's dry run otherwise hashes the missing outputs of upstream stages
    for its run cache and stops)."""
    from tests.profiles import raw, unpinned

    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repository(repo)
    commit_all(repo, "profiles")
    for profile in REAL:
        (repo / "params.yaml").write_text((repo / "configs" / f"{profile}.yaml").read_text())
        check = sh(repo, "deltalab", "params", "check")
        assert check.stdout.startswith("params.yaml: ok")
        for source in unpinned(profile):
            assert f"{source!r} is not pinned" in check.stderr
        sh(repo, "python", "tools/render_pipeline.py", "--write")
        dry = sh(repo, "dvc", "repro", "--dry", "--force").stdout
        stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
        ran = {name.split("@")[0] for name in re.findall(r"Running stage '([^']+)'", dry)}
        assert ran == stages, profile
        assert raw(profile)["study"]  # each declares its own study
    assert {p: unpinned(p) for p in REAL} == {
        "domain-tokens-10b": [
            "zhengpu-berkeley/domain-token-gpt2-baseline-10b",
            "zhengpu-berkeley/domain-token-gpt2-mul-tokens-10b",
        ],
        "tulu3-8b": [],
        "dots-qwen2.5-math-7b": [
            "Elliott/Qwen2.5-Math-7B-SFT", "rzzhan/ExGRPO-Qwen2.5-Math-7B-Zero",
        ],
        "gemma3-270m-masks": [],
    }  # fmt: skip
