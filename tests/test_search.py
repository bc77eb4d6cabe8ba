"""DoTS search: consistency, difficulty, easy/hard sampling, objectives, study identity and resume,
Pareto selection, storage errors, and two concurrent `deltalab search` workers on one study."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest

from deltalab.config import load_params
from deltalab.errors import ConfigError, DataError
from deltalab.search.live_model import open_live_model
from deltalab.search.objectives import SearchObjective, prompt_perplexity
from deltalab.search.params import SearchParams
from deltalab.search.queries import consistency, difficulty_table, sample_easy_hard
from deltalab.search.study import (
    create_or_load,
    fail_running,
    open_storage,
    optimize,
    select,
    study_inputs,
    trials_table,
)
from tests.evaluation_fixtures import questions
from tests.search_fixtures import build_search_workspace, search_cmd, worker_inputs

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- consistency


def test_consistency_is_the_majority_share_and_zero_when_no_answer_wins():
    assert consistency(["4", "4", "5", None]) == (0.5, "4")
    assert consistency([None, None, "4"]) == (0.0, None)
    assert consistency(["7", "8"]) == (0.5, "7")  # tie: the first given
    assert consistency(["3"] * 7) == (1.0, "3")
    with pytest.raises(ValueError):
        consistency([])


def _pool(n):
    return [{"id": f"q{i:02d}", "question": f"question {i}", "gold": str(i)} for i in range(n)]


def test_difficulty_is_one_minus_mean_consistency_and_drops_above_threshold():
    rows = _pool(3)
    answers = {
        "sft": [["1", "1", "1", "1"], ["2", "3", None, None], ["5", "5", "6", "7"]],
        "rlvr": [["1", "1", "2", "2"], [None, None, None, "2"], ["5", "5", "5", "5"]],
    }
    table = difficulty_table(rows, answers, threshold=0.8)
    assert list(table["consistency_sft"]) == [1.0, 0.0, 0.5]
    assert list(table["consistency_rlvr"]) == [0.5, 0.0, 1.0]
    assert list(table["difficulty"]) == [0.25, 1.0, 0.25]
    assert list(table["kept"]) == [True, False, True]
    assert list(table["no_answer_rlvr"]) == [0, 3, 0]


def test_easy_hard_split_is_balanced_seeded_and_keeps_pool_order():
    n = 21
    table = pd.DataFrame(
        {"id": [f"q{i:02d}" for i in range(n)], "difficulty": [(i * 5 % n) / n for i in range(n)]}
    ).assign(kept=lambda d: d["difficulty"] < 0.9)
    picked = sample_easy_hard(table, per_group=4, seed=3)
    assert list(picked["group"].value_counts().sort_index()) == [4, 4]
    kept = table[table["kept"]].sort_values("difficulty")
    median_cut = kept["difficulty"].iloc[len(kept) // 2]
    easy, hard = picked[picked.group == "easy"], picked[picked.group == "hard"]
    assert easy["difficulty"].max() < median_cut <= hard["difficulty"].min()
    assert not set(picked["id"]) - set(kept["id"])  # dropped queries never come back
    assert list(picked["id"]) == sorted(picked["id"])  # pool order
    assert picked.equals(sample_easy_hard(table, per_group=4, seed=3))
    assert not picked.equals(sample_easy_hard(table, per_group=4, seed=4))
    whole = sample_easy_hard(table, per_group=100, seed=0)
    assert len(whole) == len(kept)
    with pytest.raises(DataError, match="threshold"):
        sample_easy_hard(table.assign(kept=False), per_group=4, seed=0)


# --------------------------------------------------------------------------- selection


def _row(trial, c, p, pareto=True):
    return {"trial": trial, "scale_sft": 1.0, "scale_rlvr": 1.0, "consistency": c,
            "perplexity": p, "pareto": pareto}  # fmt: skip


def test_selection_rules_pick_the_documented_pareto_trial():
    rows = [
        _row(0, 0.9, 100.0),  # most consistent, worst perplexity
        _row(1, 0.8, 20.0),  # the knee
        _row(2, 0.3, 10.0),  # best perplexity
        _row(3, 0.95, 200.0, pareto=False),  # not on the front: never chosen
    ]
    assert select(rows, "knee")["trial"] == 1
    assert select(rows, "max_consistency")["trial"] == 0
    assert select(rows, "min_perplexity")["trial"] == 2
    assert select([_row(5, 0.5, 9.0), _row(4, 0.5, 9.0)], "knee")["trial"] == 4
    with pytest.raises(DataError):
        select([_row(0, 0.1, 1.0, pareto=False)], "knee")


# --------------------------------------------------------------------------- storage, identity


def test_bad_storage_urls_fail_with_the_key_and_no_password(tmp_path):
    with pytest.raises(ConfigError, match="search.storage") as err:
        open_storage("postgresql://alice:s3cret@127.0.0.1:1/optuna", tmp_path / "x.journal")
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="search.storage"):
        open_storage("not-a-url", tmp_path / "x.journal")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="search.storage"):
        open_storage(str(tmp_path / "a-file" / "x.journal"), tmp_path / "y")


class _FakeObjective:
    """Deterministic objectives of the scales (no model): a smooth trade-off."""

    def __init__(self, nan_below: float | None = None):
        self.calls = 0
        self.nan_below = nan_below

    def __call__(self, scales, values=None):
        self.calls += 1
        a, b = scales
        if self.nan_below is not None and a < self.nan_below:
            return SimpleNamespace(consistency=float("nan"), perplexity=float("nan"))
        return SimpleNamespace(consistency=1 - (a - 1.2) ** 2, perplexity=10 + (b - 0.7) ** 2 + a)


def _inputs(tmp_path, **search):
    cfg = SearchParams(**{"n_trials": 10, "population_size": 4} | search)
    queries = tmp_path / "queries.parquet"
    if not queries.exists():
        pd.DataFrame({"question": ["a", "b"]}).to_parquet(queries)
    metas = [{"format": "x", "tensors": "{}", "top_ratio": "0.3"}, {"format": "y"}]
    return study_inputs(
        "baseline-0", tmp_path, list(zip(["s", "r"], metas, strict=True)), queries, cfg
    ), cfg


def test_same_inputs_reopen_the_study_and_a_killed_search_resumes(tmp_path):
    storage = open_storage(None, tmp_path / "studies" / "baseline-0.journal")
    inputs, cfg = _inputs(tmp_path)
    ranges = {"scale_sft": cfg.scale_sft, "scale_rlvr": cfg.scale_rlvr}
    study = create_or_load(storage, inputs, seed=0)
    optimize(study, _FakeObjective(), ranges, target=4, progress=False)
    study.ask()  # a trial left RUNNING by a killed worker

    again = create_or_load(open_storage(None, tmp_path / "studies" / "baseline-0.journal"),
                           inputs, seed=0)  # fmt: skip
    assert again.study_name == study.study_name
    assert fail_running(again) == 1
    objective = _FakeObjective()
    ran = optimize(again, objective, ranges, target=10, progress=False)
    assert ran == 6 and 1 <= objective.calls <= 6  # only the missing trials (repeats reused)
    rows = trials_table(again)
    assert len(rows) == 10 and any(r["pareto"] for r in rows)
    assert optimize(again, objective, ranges, target=10, progress=False) == 0

    changed, _ = _inputs(tmp_path, votes=9)
    assert changed.name != inputs.name  # other objective params: another study
    more, _ = _inputs(tmp_path, n_trials=50, select="max_consistency")
    assert more.name == inputs.name  # more trials or another rule: the same study


def test_identical_runs_give_identical_trials(tmp_path):
    inputs, cfg = _inputs(tmp_path)
    ranges = {"scale_sft": cfg.scale_sft, "scale_rlvr": cfg.scale_rlvr}
    tables = []
    for run in range(2):
        storage = open_storage(None, tmp_path / f"run{run}.journal")
        study = create_or_load(storage, inputs, seed=0)
        optimize(study, _FakeObjective(), ranges, target=12, progress=False)
        tables.append(trials_table(study))
    assert tables[0] == tables[1]
    assert all(0.5 <= r["scale_sft"] <= 2.0 and 0.5 <= r["scale_rlvr"] <= 2.0 for r in tables[0])


def test_nan_trials_fail_and_too_many_stop_the_search(tmp_path):
    inputs, cfg = _inputs(tmp_path)
    ranges = {"scale_sft": cfg.scale_sft, "scale_rlvr": cfg.scale_rlvr}
    study = create_or_load(open_storage(None, tmp_path / "a.journal"), inputs, seed=0)
    optimize(study, _FakeObjective(nan_below=1.25), ranges, target=6, progress=False)
    assert len(trials_table(study)) == 6
    assert all(r["scale_sft"] >= 1.25 for r in trials_table(study))
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed  # NaN trials are recorded as failed, not as results
    study = create_or_load(open_storage(None, tmp_path / "b.journal"), inputs, seed=0)
    with pytest.raises(DataError, match="NaN"):
        optimize(study, _FakeObjective(nan_below=5.0), ranges, target=3, progress=False)


# --------------------------------------------------------------------------- real objective


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_search_workspace(tmp_path_factory.mktemp("dots"))


def _search_cfg(**kw):
    return SearchParams(
        **{"n_trials": 8, "population_size": 4, "votes": 3, "max_new_tokens": 8} | kw
    )


def test_objective_is_deterministic_and_scales_change_it(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    lm = open_live_model("base", ["sft.safetensors", "rlvr.safetensors"])
    objective = SearchObjective(lm.engine, lm.apply, questions(4), _search_cfg())
    first, again = objective([1.0, 1.0]), objective([1.0, 1.0])
    assert (first.consistency, first.perplexity) == (again.consistency, again.perplexity)
    assert 0.0 <= first.consistency <= 1.0 and first.perplexity > 1.0
    assert set(first.seconds) == {"apply", "generate", "perplexity"}
    far = objective([2.0, 0.0])
    assert far.perplexity != first.perplexity
    lm.live.apply([0.0, 0.0])
    direct = prompt_perplexity(lm.model, lm.tokenizer, questions(4), batch_size=1)
    batched = prompt_perplexity(lm.model, lm.tokenizer, questions(4), batch_size=4)
    assert direct == pytest.approx(batched, rel=1e-5)  # right padding never enters the mean


def test_two_concurrent_workers_share_one_study(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    inputs = worker_inputs(workspace, _search_cfg(n_trials=6))
    journal = workspace / "shared.journal"
    study = create_or_load(open_storage(str(journal), journal), inputs, seed=0)
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    cmd = search_cmd(study.study_name, str(journal))
    workers = [
        subprocess.Popen(
            [*cmd, "--seed", str(s), "--trials", "4"],
            cwd=workspace,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for s in (11, 12)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(
        study_name=study.study_name, storage=open_storage(str(journal), journal)
    )
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # each runs at most 4, so both contribute; a worker counts the other's running trial toward
    # the target and waits rather than overshoot: exactly the study's 6
    assert len(done) == 6
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert len({t.user_attrs["worker"] for t in done}) == 2
    first = {}
    for t in sorted(done, key=lambda t: t.number):
        first.setdefault(t.user_attrs["worker"], (t.params["scale_sft"], t.params["scale_rlvr"]))
    assert len(set(first.values())) == 2  # own seeds: the random first generation differs

    pd.DataFrame({"question": questions(3)}).to_parquet(workspace / "queries.parquet")
    refused = subprocess.run([*cmd, "--trials", "1"], cwd=workspace, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "queries.parquet" in refused.stderr


def test_search_params_reject_bad_ranges_and_merge_outside_them(tmp_path):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad = copy.deepcopy(raw)
    bad["search"]["scale_sft"] = [2.0, 0.5]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="search.scale_sft"):
        load_params(path)
    bad = copy.deepcopy(raw)
    bad["merge"] |= {"scale_sft": 3.0, "scale_rlvr": 1.0}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"merge.scale_sft=3.0 is outside"):
        load_params(path)
    bad = copy.deepcopy(raw)
    bad["task_vectors"]["top_ratio"] = {"sft": 0.3}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="top_ratio"):
        load_params(path)
    bad["task_vectors"]["top_ratio"] = 0.0
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="top_ratio"):
        load_params(path)


def test_a_repeated_point_reuses_its_result(tmp_path):
    inputs, cfg = _inputs(tmp_path)
    ranges = {"scale_sft": cfg.scale_sft, "scale_rlvr": cfg.scale_rlvr}
    study = create_or_load(open_storage(None, tmp_path / "r.journal"), inputs, seed=0)
    for _ in range(2):
        study.enqueue_trial({"scale_sft": 1.0, "scale_rlvr": 1.0})
    objective = _FakeObjective()
    optimize(study, objective, ranges, target=2, progress=False)
    rows = trials_table(study)
    assert len(rows) == 2 and rows[0]["consistency"] == rows[1]["consistency"]
    assert objective.calls == 1


def test_an_rdb_url_holds_a_study_with_heartbeats(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"  # RDB storage; PostgreSQL/MySQL work the same way
    storage = open_storage(url, tmp_path / "unused.journal")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 30
    inputs, cfg = _inputs(tmp_path)
    ranges = {"scale_sft": cfg.scale_sft, "scale_rlvr": cfg.scale_rlvr}
    study = create_or_load(storage, inputs, seed=0)
    optimize(study, _FakeObjective(), ranges, target=3, progress=False)
    again = create_or_load(open_storage(url, tmp_path / "unused.journal"), inputs, seed=0)
    assert len(trials_table(again)) == 3 and not (tmp_path / "unused.journal").exists()


# --------------------------------------------------------------------------- a method's parameter


def test_the_search_can_search_a_method_parameter_beside_the_scales(workspace, monkeypatch):
    """TIES density searched with the scales: trials carry it inside its range, a new study
    identity, a worker process joins with the same method, and the chosen trial's live weights
    are the written merge of that density bit for bit."""
    from dataclasses import asdict

    import torch
    from safetensors.torch import load_file

    from deltalab.merging.disk import merge
    from deltalab.merging.method_spec import MethodParams
    from deltalab.search.params import MergeParams, trial_method

    monkeypatch.chdir(workspace)
    cfg = _search_cfg(n_trials=6, method_ranges={"density": [0.3, 0.9]})
    merge_cfg = MergeParams(method="ties", density=1.0)
    method = trial_method(cfg, "ties", merge_cfg.method_params())
    assert method == {"name": "ties", "params": asdict(MethodParams(density=1.0)),
                      "ranges": {"density": [0.3, 0.9]}}  # fmt: skip
    assert trial_method(_search_cfg(), "task_arithmetic", MethodParams()) is None  # as before
    inputs = worker_inputs(workspace, cfg, method=method)
    assert inputs.name != worker_inputs(workspace, _search_cfg(n_trials=6)).name
    assert list(inputs.ranges) == ["scale_sft", "scale_rlvr", "density"]

    lm = open_live_model("base", ["sft.safetensors", "rlvr.safetensors"], method="ties",
                         method_params=merge_cfg.method_params())  # fmt: skip
    objective = SearchObjective(lm.engine, lm.apply, questions(4), cfg)
    journal = workspace / "ties.journal"
    study = create_or_load(open_storage(str(journal), journal), inputs, seed=0)
    optimize(study, objective, inputs.ranges, target=4, progress=False)
    rows = trials_table(study)
    assert len(rows) == 4 and all(0.3 <= r["density"] <= 0.9 for r in rows)
    assert len({r["density"] for r in rows}) == 4
    assert len({(r["consistency"], r["perplexity"]) for r in rows}) > 1

    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    worker = subprocess.run([*search_cmd(study.study_name, str(journal)), "--seed", "5"],
                            cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    rows = trials_table(study)
    assert len(rows) == 6 and all(0.3 <= r["density"] <= 0.9 for r in rows)

    chosen = select(rows, "knee")
    scales = [chosen["scale_sft"], chosen["scale_rlvr"]]
    lm.apply(scales, {"density": chosen["density"]})
    out = workspace / "merged-searched"
    merge(lm.base, list(zip(lm.vectors, scales, strict=True)), out, progress=False,
          method="ties", method_params=MethodParams(density=chosen["density"]))  # fmt: skip
    written = load_file(next(out.glob("*.safetensors")))
    state = lm.model.state_dict()
    assert all(torch.equal(state[n], written[n]) for n in lm.live.slots)
    lm.apply(scales, {"density": 0.3})
    assert not all(torch.equal(lm.model.state_dict()[n], written[n]) for n in lm.live.slots)


def test_the_merge_takes_the_searched_values_and_refuses_a_stale_search(tmp_path):
    import json

    from deltalab.search.merged import chosen_method
    from deltalab.search.params import MergeParams

    path = tmp_path / "search.json"
    method = {"name": "ties", "params": {}, "ranges": {"density": [0.3, 0.9]}}
    path.write_text(json.dumps({"chosen": {"trial": 3, "scale_sft": 1.0, "scale_rlvr": 1.0,
                                           "density": 0.42}, "method": method}))  # fmt: skip
    params, searched = chosen_method(MergeParams(method="ties", gamma=0.0), path)
    assert searched == {"density": 0.42} and params.density == 0.42 and params.gamma == 0.0
    both = MergeParams(method="ties", density=0.7, scale_sft=1.0, scale_rlvr=1.0)
    assert chosen_method(both, path) == (both.method_params(), {})  # search not read
    with pytest.raises(DataError, match="the search merged with ties, merge.method is dare_ties"):
        chosen_method(MergeParams(method="dare_ties", density=0.5), path)
    path.write_text(json.dumps({"chosen": {"trial": 0, "scale_sft": 1.0, "scale_rlvr": 1.0}}))
    assert chosen_method(MergeParams(), path)[1] == {}  # a task-arithmetic search


@pytest.mark.parametrize(
    ("merge", "ranges", "message"),
    [
        ({"method": "task_arithmetic"}, {"density": [0.3, 0.9]},
         "search.method_ranges.density: merge.method task_arithmetic does not read density"),
        ({"method": "ties"}, {"gamma": [0.0, 0.1]},
         "search.method_ranges.gamma: merge.method ties does not read gamma"),
        ({"method": "ties"}, {"density": [0.0, 0.9]},
         r"search.method_ranges.density=\[0.0, 0.9\]: ties: density must be in"),
        ({"method": "ties"}, {"density": [0.9, 0.3]}, "method_ranges"),
        ({"method": "ties"}, {"normalize": [0.0, 1.0]}, "method_ranges"),
    ],
)  # fmt: skip
def test_a_method_range_that_cannot_work_is_refused_by_key(tmp_path, merge, ranges, message):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["merge"] |= merge
    raw["search"]["method_ranges"] = ranges
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_params(path)
