"""End to end: `dvc repro` of the micro profile in a temporary copy of the repository.

One module-scoped pipeline run serves every check: outputs load, metrics exist, a SIGKILLed
training stage leaves no partial output, reruns are byte-identical, the run cache limits a
param change to the stages downstream of it, and push -> clone -> pull restores everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from tests.workspace import ROOT, commit_all, copy_repository, offline_env, sh

TRAINED = ("pretrain", "sft_tulu", "sft_gsm8k")
CONDS = ("baseline", "mul_tokens")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def _ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    repo = base / "repo"
    repo.mkdir()
    copy_repository(repo)
    shutil.copy(repo / "configs/micro.yaml", repo / "params.yaml")
    sh(repo, "dvc", "remote", "modify", "local", "url", str(base / "remote"))
    commit_all(repo, "micro profile")
    return base, repo


@pytest.fixture(scope="module")
def reproduced(workspace):
    base, repo = workspace
    _kill_training_mid_run(repo)
    start = time.time()
    out = sh(repo, "dvc", "repro")
    return base, repo, out.stdout, time.time() - start


def _kill_training_mid_run(repo: Path) -> None:
    """SIGKILL sft_tulu once it has logged training steps (with a step budget it cannot finish)."""
    micro = (repo / "params.yaml").read_text()
    params = yaml.safe_load(micro)
    params["sft_tulu"]["max_steps"] = 100_000
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.Popen(
        ["dvc", "repro", "sft_tulu@baseline-0"],
        cwd=repo,
        env=offline_env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # The run's dvclive log lives in a hidden sibling until the checkpoint is saved.
    curve = repo / "metrics/train/sft_tulu/.baseline-0.tmp-live/plots/metrics/loss.tsv"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and _logged_steps(curve) < 2:
        time.sleep(0.2)
    assert proc.poll() is None, "sft_tulu ended before it could be killed"
    assert _logged_steps(curve) >= 2, "sft_tulu never started training"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = repo / "models/baseline/seed0/sft_tulu"
    assert not out.exists(), "a killed stage left a partial checkpoint"
    assert not list(out.parent.glob(".sft_tulu.tmp-*"))
    log = repo / "metrics/train/sft_tulu/baseline-0"  # DVC cleared it before the run
    assert not [p for p in log.rglob("*") if p.is_file()], "a killed stage left half a log"
    assert (repo / "models/baseline/seed0/pretrain/model.safetensors").is_file()  # finished before
    (repo / "params.yaml").write_text(micro)


def _logged_steps(curve: Path) -> int:
    return len(curve.read_text().splitlines()) - 1 if curve.is_file() else 0


def test_repro_completes_after_a_kill_and_outputs_load(reproduced):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, repo, stdout, _ = reproduced
    ran = _ran_stages(stdout)
    assert "sft_tulu@baseline-0" in ran  # the killed stage ran again, from scratch
    assert "pretrain@baseline-0" not in ran  # its finished parent was kept
    assert "sft_gsm8k@mul_tokens-0" in ran
    checkpoints = [(c, s) for c in ("baseline", "mul_tokens") for s in TRAINED]
    checkpoints += [("baseline", "dpo"), ("baseline", "rlvr")]  # the delta track
    for cond, stage in checkpoints:
        path = repo / "models" / cond / "seed0" / stage
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert model.config.vocab_size == len(tok)
        assert model.config.eos_token_id == tok.eos_token_id
    assert not (repo / "models/mul_tokens/seed0/dpo").exists()  # delta track: baseline only
    exp_avg = safe_open(repo / "models/baseline/seed0/dpo_exp_avg.safetensors", "pt")
    assert "transformer.h.0.attn.c_attn.weight" in set(exp_avg.keys())


def test_metrics_exist(reproduced):
    _, repo, _, _ = reproduced
    for cond in ("baseline", "mul_tokens"):
        for stage in ("pretrain", "sft_tulu", "sft_gsm8k"):
            live = repo / "metrics/train" / stage / f"{cond}-0"
            metrics = json.loads((live / "metrics.json").read_text())
            assert metrics["final/eval_loss"] > 0
            assert (live / "plots/metrics/loss.tsv").is_file()
            assert not (live / "params.yaml").exists()  # no temp paths in Git-tracked metrics
        gsm = json.loads((repo / f"metrics/train/sft_gsm8k/{cond}-0/metrics.json").read_text())
        assert gsm["stop_eval_questions"] == 16  # sft_gsm8k.stop_eval_questions
        # the same greedy answers to the same first 16 test questions, in the evaluate stage
        preds = (repo / f"reports/predictions/{cond}/seed0/sft_gsm8k.jsonl").open()
        stopped = [json.loads(line)["stopped"] for line in preds][:16]
        assert gsm["stop_rate"] == pytest.approx(sum(stopped) / 16)
    dpo = json.loads((repo / "metrics/train/dpo/baseline-0/metrics.json").read_text())
    assert 0.0 <= dpo["final/eval_rewards/accuracies"] <= 1.0
    assert (repo / "metrics/train/dpo/baseline-0/plots/metrics/eval/rewards/margins.tsv").is_file()
    rlvr = json.loads((repo / "metrics/train/rlvr/baseline-0/metrics.json").read_text())
    assert rlvr["heldout/prompts"] == 12 and 0.0 <= rlvr["heldout/mcnemar_p"] <= 1.0
    assert (repo / "metrics/train/rlvr/baseline-0/plots/metrics/reward.tsv").is_file()
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    seen = shown[""]["data"]  # the workspace
    for path in ("metrics/compare.json", "metrics/train/sft_gsm8k/baseline-0/metrics.json"):
        assert seen[path]["data"] == json.loads((repo / path).read_text())  # dvc reads our files


def test_evaluation_metrics_and_compare(reproduced):
    _, repo, _, _ = reproduced
    for cond in ("baseline", "mul_tokens"):
        for model in ("pretrain", "sft_tulu", "sft_gsm8k"):
            m = json.loads((repo / f"metrics/eval/{cond}/seed0/{model}.json").read_text())
            assert m["gsm8k"]["total"] == 24 and 0 <= m["gsm8k"]["accuracy"] <= 1
            assert set(m["probes"]) >= {"accuracy", "times_table", "two_by_one", "addition"}
            preds = (repo / f"reports/predictions/{cond}/seed0/{model}.jsonl").read_text()
            assert len(preds.splitlines()) == 24 + 281
    compare = json.loads((repo / "metrics/compare.json").read_text())
    for model in TRAINED:
        assert compare[model]["n_seeds"] == 2
        row = compare[model]["gsm8k"]
        assert row["questions_ci_low"] <= row["difference"] <= row["questions_ci_high"]
        assert 0 <= row["mcnemar_p"] <= 1
        per_seed = [compare[model]["seeds"][f"seed{s}"]["gsm8k"]["difference"] for s in (0, 1)]
        assert row["seeds_mean_difference"] == pytest.approx(sum(per_seed) / 2)
        assert row["seeds_ci_low"] <= row["seeds_mean_difference"] <= row["seeds_ci_high"]
    assert "dpo" not in compare  # no mul_tokens dpo to pair with
    post = compare["post_training"]["baseline"]
    assert set(post) == {
        "dpo_vs_sft_gsm8k",
        "rlvr_vs_sft_tulu",
        "merged_vs_sft_tulu",
        "masked_dpo_vs_sft_gsm8k",
        "masked_dpo_random_vs_sft_gsm8k",
        "masked_dpo_vs_dpo",
        "masked_dpo_vs_masked_dpo_random",
        "merged_vs_sft_gsm8k",  # rivals: the merge against the models it merges
        "merged_vs_rlvr",
    }
    assert post["dpo_vs_sft_gsm8k"]["gsm8k"]["n"] == 24
    # per-run numbers compared over the delta-track seeds (one here: no interval)
    reward = post["masked_dpo_vs_dpo"]["reward_accuracy"]
    masked = json.loads((repo / "metrics/masked_dpo/baseline-0.json").read_text())
    assert reward["dpo_accuracy"] == masked["dpo"]["val_reward_accuracy"]
    assert reward["n_seeds"] == 1 and "seeds_ci_low" not in reward
    references = compare["merge_references"]["baseline"]
    merge = json.loads((repo / "metrics/merge/baseline-0.json").read_text())
    best = references["best_single"]
    assert best in ("sft_gsm8k", "rlvr") and "merged_vs_" + best not in references
    assert references[f"dense_1_1_vs_{best}"]["difference"] == pytest.approx(
        merge["accuracy"]["dense_1_1"] - merge["accuracy"][best]
    )
    assert post["dpo_vs_sft_gsm8k"]["n_seeds"] == 1  # the delta track trains seed 0 only
    assert (repo / "reports/evaluation/accuracy.png").stat().st_size > 1000
    assert "sft_gsm8k · mul_tokens" in (repo / "metrics/plots/eval/accuracy.csv").read_text()


def test_delta_analysis_of_the_pipeline_checkpoints(reproduced):
    _, repo, _, _ = reproduced
    summary = json.loads((repo / "metrics/deltas/baseline-0.json").read_text())
    assert set(summary["deltas"]) == {"sft_tulu", "sft_gsm8k", "rlvr", "dpo"}
    assert summary["contrast"]["sft_gsm8k_vs_rlvr"]["magnitude_ratio"] > 0
    report = repo / "reports/deltas/baseline-0"
    assert (report / "tensors.csv").is_file()
    assert "Published numbers beside ours" in (report / "report.md").read_text()
    assert not (repo / "metrics/deltas/mul_tokens-0.json").exists()  # delta track: baseline only


def test_behavior_of_the_post_trained_models(reproduced):
    _, repo, _, _ = reproduced
    behavior = json.loads((repo / "metrics/behavior/baseline-0.json").read_text())
    assert set(behavior["models"]) == {"sft_tulu", "sft_gsm8k", "rlvr", "dpo"}
    assert (repo / "reports/behavior/baseline-0/passk.png").stat().st_size > 1000


def test_nothing_to_do_and_noop_is_fast(reproduced):
    _, repo, _, _ = reproduced
    start = time.time()
    out = sh(repo, "dvc", "repro")
    assert not _ran_stages(out.stdout)
    assert time.time() - start < 60
    assert "up to date" in sh(repo, "dvc", "status").stdout


def test_forced_reruns_are_byte_identical_whatever_hf_hub_offline(reproduced):
    _, repo, _, _ = reproduced
    members = ("pretrain@baseline-0", "sft_gsm8k@mul_tokens-0", "dpo@baseline-0")
    before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for member in members:
        # pretrain again without HF_HUB_OFFLINE (the first run had it): the saved tokenizer
        # config once recorded how it was loaded, giving the same weights another hash
        env = {"HF_HUB_OFFLINE": "0"} if member.startswith("pretrain") else {}
        sh(repo, "dvc", "repro", "--force", "--single-item", member, env=env)
    after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for member in members:
        assert after[member]["outs"] == before[member]["outs"], member  # same md5 of every file
    assert "up to date" in sh(repo, "dvc", "status").stdout


def _would_run(repo: Path, changes: dict[str, dict]) -> tuple[set[str], set[str]]:
    """(stages whose own deps changed, stages `dvc repro` would run) after a params edit; the
    edit is undone afterwards, nothing runs."""
    params = (repo / "params.yaml").read_text()
    edited = yaml.safe_load(params)
    for section, values in changes.items():
        edited[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(edited))
    try:
        changed = set(json.loads(sh(repo, "dvc", "status", "--json").stdout))
        # --force-downstream: a dry run cannot know that the outputs would change
        dry = sh(repo, "dvc", "repro", "--dry", "--force-downstream").stdout
    finally:
        (repo / "params.yaml").write_text(params)
    return changed, _ran_stages(dry)


def test_param_change_reruns_only_downstream(reproduced):
    _, repo, _, _ = reproduced
    changed, would_run = _would_run(repo, {"rlvr": {"learning_rate": 5.0e-5}})
    assert changed == {"rlvr@baseline-0"}  # only its params changed
    assert would_run == {
        "rlvr@baseline-0",
        "evaluate_track@baseline-0-rlvr",
        "behavior@baseline-0",
        "analyze_deltas@baseline-0",
        *DOTS,
        "compare",
        "report",  # the study's page reads every workflow's metrics
    }
    assert "up to date" in sh(repo, "dvc", "status").stdout


DOTS = (
    "task_vectors@baseline-0",
    "difficulty@baseline-0",
    "sample_queries@baseline-0",
    "search@baseline-0",
    "merge@baseline-0",
    "evaluate_track@baseline-0-merged",
)


def test_dots_track_outputs(reproduced):
    import pandas as pd
    from transformers import AutoModelForCausalLM

    _, repo, _, _ = reproduced
    vectors = json.loads((repo / "metrics/vectors/baseline-0.json").read_text())
    assert 0 < vectors["sft"]["energy_kept"] < 1 and 0 <= vectors["sign_conflict"] <= 1
    difficulty = pd.read_parquet(repo / "data/search/baseline/seed0/difficulty.parquet")
    assert len(difficulty) == 24 and {"consistency_sft", "consistency_rlvr"} <= set(difficulty)
    queries = pd.read_parquet(repo / "data/search/baseline/seed0/queries.parquet")
    assert sorted(queries["group"].value_counts()) == [3, 3]
    pool = {json.loads(x)["question"] for x in (repo / "data/prepared/search/pool.jsonl").open()}
    trained = (repo / "data/prepared/gsm8k/train.jsonl").read_text()
    tested = (repo / "data/prepared/gsm8k/test.jsonl").read_text()
    assert not any(q in trained or q in tested for q in pool)  # never trained on or evaluated
    search = json.loads((repo / "metrics/search/baseline-0.json").read_text())
    assert search["trials"] == 6 and search["pareto_size"] >= 1
    assert 0.5 <= search["chosen"]["scale_sft"] <= 2.0
    assert (repo / "reports/search/baseline-0/search.png").stat().st_size > 1000
    merge = json.loads((repo / "metrics/merge/baseline-0.json").read_text())
    references = {"ties_1_1", "dare_ties_1_1", "ram_1_1"}  # merge.references of the micro profile
    assert set(merge["accuracy"]) == {"merged", "sparse_1_1", "dense_1_1", "sft_gsm8k", "rlvr",
                                      *references}  # fmt: skip
    assert set(merge["vs_best_single"]) >= references
    assert merge["scales"]["scale_sft"] == search["chosen"]["scale_sft"]
    for test in merge["vs_best_single"].values():
        assert test["questions_ci_low"] <= test["difference"] <= test["questions_ci_high"]
    AutoModelForCausalLM.from_pretrained(repo / "models/baseline/seed0/merged")
    evaluated = json.loads((repo / "metrics/eval/baseline/seed0/merged.json").read_text())
    assert evaluated["gsm8k"]["accuracy"] == merge["accuracy"]["merged"]  # same weights, bits


def test_masks_and_masked_dpo(reproduced):
    from safetensors.torch import load_file

    from deltalab.masks.build import MaskFile

    _, repo, _, _ = reproduced
    masks = json.loads((repo / "metrics/masks/baseline-0.json").read_text())
    pairs = masks["jaccard"]
    assert {"momentum_vs_magnitude", "fisher_vs_magnitude", "random_vs_magnitude"} <= set(pairs)
    for row in pairs.values():
        assert 0 <= row["pooled"] <= 1 and 0 < row["random"] < 1
    momentum = MaskFile(repo / "masks/baseline/seed0/momentum.safetensors")
    assert momentum.density == pytest.approx(0.05, abs=0.01)
    assert (repo / "reports/masks/baseline-0/jaccard_layers.png").stat().st_size > 1000
    result = json.loads((repo / "metrics/masked_dpo/baseline-0.json").read_text())
    assert set(result) == {"masked_dpo", "masked_dpo_random", "dpo"}
    for name in ("masked_dpo", "masked_dpo_random"):
        assert result[name]["frozen_changed"] == 0 and result[name]["trainable"] > 0
    parent = load_file(repo / "models/baseline/seed0/sft_gsm8k/model.safetensors")
    tuned = load_file(repo / "models/baseline/seed0/masked_dpo/model.safetensors")
    name = "transformer.h.0.mlp.c_fc.weight"
    mask = momentum.mask(name)
    assert torch_equal(tuned[name][~mask], parent[name][~mask])  # frozen: bit for bit
    assert not torch_equal(tuned[name][mask], parent[name][mask])  # masked entries trained
    assert torch_equal(tuned["transformer.wte.weight"], parent["transformer.wte.weight"])
    compare = json.loads((repo / "metrics/compare.json").read_text())["post_training"]
    assert "masked_dpo_vs_dpo" in compare["baseline"]
    assert json.loads((repo / "metrics/eval/baseline/seed0/masked_dpo.json").read_text())


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_dots_sweeps_rerun_only_their_stages(reproduced):
    _, repo, _, _ = reproduced
    changed, would_run = _would_run(repo, {"task_vectors": {"top_ratio": 0.5}})
    # the merge stage evaluates its reference methods at the vectors' sparsity
    assert (changed, would_run) == ({DOTS[0], DOTS[4]}, {*DOTS, "compare", "report"})
    changed, would_run = _would_run(repo, {"search": {"select": "max_consistency"}})
    assert (changed, would_run) == ({DOTS[3]}, {*DOTS[3:], "compare", "report"})
    # the trials merge with merge.method: searching its density re-runs the search too
    ties = {"merge": {"method": "ties"}, "search": {"method_ranges": {"density": [0.3, 1.0]}}}
    changed, would_run = _would_run(repo, ties)
    assert (changed, would_run) == ({DOTS[3], DOTS[4]}, {*DOTS[3:], "compare", "report"})
    # one real experiment: its outputs, and everything else left as it was
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "micro results", check=False)
    untouched = [repo / f"metrics/eval/{c}/seed{s}/sft_gsm8k.json" for c in CONDS for s in (0, 1)]
    untouched += [
        repo / "metrics/eval/baseline/seed0/rlvr.json",
        repo / "metrics/search/baseline-0.json",
    ]
    before = [p.read_bytes() for p in untouched]
    out = sh(repo, "dvc", "exp", "run", "-S", "merge.scale_sft=1.0", "-S", "merge.scale_rlvr=1.0")
    assert _ran_stages(out.stdout) == {"merge@baseline-0", DOTS[-1], "compare", "report"}
    assert [p.read_bytes() for p in untouched] == before
    merge = json.loads((repo / "metrics/merge/baseline-0.json").read_text())
    assert merge["scales"]["source"] == "params"
    assert merge["accuracy"]["merged"] == merge["accuracy"]["sparse_1_1"]  # same weights
    shown = sh(
        repo, "dvc", "exp", "show", "--csv", "--sort-by",
        "metrics/merge/baseline-0.json:accuracy.merged",
    )  # fmt: skip
    assert "accuracy.merged" in shown.stdout
    # the README's sweep table: the headline numbers and params the experiment moved, nothing else
    readme = (ROOT / "README.md").read_text()
    (line,) = {ln.split("  #")[0] for ln in readme.splitlines()
               if ln.startswith("dvc exp show --only-changed --md --drop")}  # fmt: skip
    header = sh(repo, *shlex.split(line)).stdout.splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert {"merge.scale_sft", "merge.scale_rlvr"} <= set(columns)  # micro's accuracies may tie
    headline = ("gsm8k/", "post/", "merge/", "masked_dpo/")
    swept = ("Experiment", "merge.scale_sft", "merge.scale_rlvr")
    assert all(c.startswith(headline) for c in columns if c not in swept)
    sh(repo, "git", "checkout", "-q", "--", ".")
    sh(repo, "dvc", "checkout", "-q")


def test_push_clone_pull_restores_everything(reproduced):
    base, repo, _, _ = reproduced
    sh(repo, "dvc", "push")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results", check=False)
    clone = base / "clone"
    sh(base, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "dvc", "pull")
    assert (clone / "models/mul_tokens/seed0/sft_gsm8k/model.safetensors").is_file()
    status = sh(clone, "dvc", "status").stdout
    assert "up to date" in status, status
    assert not _ran_stages(sh(clone, "dvc", "repro").stdout)


def _outputs(repo: Path) -> dict[str, str]:
    """sha256 of every file of every DVC output of the pipeline's stages, by path (dvc.lock may
    also hold entries of stages another profile had)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    stages = set(sh(repo, "dvc", "stage", "list", "--name-only").stdout.split())
    outs = [o["path"] for n, s in lock["stages"].items() if n in stages for o in s.get("outs", [])]
    digests = {}
    for out in outs:
        path = repo / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            digests[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def test_s3_remote_push_fresh_clone_pull(reproduced):
    """An S3 remote on a loopback moto server: push, a fresh clone pulls every output byte for
    byte, and `dvc status -c` finds remote and workspace in sync."""
    from tests.servers import s3_server

    base, repo, _, _ = reproduced
    with s3_server("deltalab-e2e") as s3:
        sh(repo, "dvc", "remote", "add", "s3", "s3://deltalab-e2e/cache")
        sh(repo, "dvc", "remote", "modify", "s3", "endpointurl", s3.endpoint)
        sh(repo, "dvc", "push", "-r", "s3", env=s3.env)
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "s3 remote", check=False)
        clone = base / "s3-clone"
        sh(base, "git", "clone", "-q", str(repo), str(clone))
        sh(clone, "dvc", "pull", "-r", "s3", env=s3.env)
        expected = _outputs(repo)
        assert len(expected) > 100 and _outputs(clone) == expected
        status = sh(clone, "dvc", "status", "-c", "-r", "s3", env=s3.env).stdout
        assert "Cache and remote 's3' are in sync" in status, status
        assert not _ran_stages(sh(clone, "dvc", "repro").stdout)


def test_the_report_reads_every_workflow(reproduced):
    """The last stage: the study on one page from the run's metrics, and the headline numbers."""
    _, repo, out, _ = reproduced
    assert "Running stage 'report'" in out
    text = (repo / "reports/index.md").read_text()
    for section in ("Domain tokens", "Post-training", "pass@k", "published numbers",
                    "merge search", "masks"):  # fmt: skip
        assert section in text
    html = (repo / "reports/index.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # self-contained
    headline = json.loads((repo / "metrics/headline.json").read_text())
    assert "gsm8k/sft_gsm8k/difference" in headline and "merge/baseline/accuracy" in headline


def test_the_readmes_commands_run(reproduced):
    """Every shell command of the README that can run offline on a finished micro run, in it;
    the others are marked in the README with why (GPU, network, a remote, a training run)."""
    from tests.readme_commands import commands

    _, repo, _, _ = reproduced
    listed = commands((ROOT / "README.md").read_text())
    ran, skipped = [], {}
    for command in listed:
        if command.skip:
            skipped.setdefault(command.skip, []).append(command.text)
            continue
        runs = command.text.split(" #")[0]  # a comment may name what a placeholder stands for
        assert not re.search(r"<[a-z]+>", runs), f"a placeholder runs: {command.text}"
        proc = subprocess.run(["bash", "-c", command.text], cwd=repo, env=offline_env(repo),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, f"{command.text}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        ran.append(command.text)
    print(f"README: {len(ran)} commands ran, {sum(map(len, skipped.values()))} skipped: "
          + "; ".join(f"{reason} ({len(c)})" for reason, c in skipped.items()))  # fmt: skip
    assert len(ran) >= 30
    assert (repo / "reports/cli-merged/config.json").is_file()  # the merge example wrote a model
