"""The merge search on a real PostgreSQL server: two `deltalab search` workers share one study,
one is killed with SIGKILL inside a trial, and its trial is re-queued through the heartbeats."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from deltalab.search.params import SearchParams
from deltalab.search.study import create_or_load, open_storage, trials_table
from tests.search_fixtures import ROOT, build_search_workspace, search_cmd, worker_inputs
from tests.servers import postgres_server

pytestmark = pytest.mark.slow
N_TRIALS = 8


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _freeze(pid: int) -> None:
    """SIGSTOP, and wait until the kernel reports the process stopped."""
    os.kill(pid, signal.SIGSTOP)
    _wait_for(
        lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
        10,
        "the stop",
    )


def test_a_killed_workers_trial_is_requeued_and_the_study_ends_exact(tmp_path, monkeypatch):
    root = build_search_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)  # the study records paths relative to the checkout
    micro = yaml.safe_load((ROOT / "configs/micro.yaml").read_text())
    micro["search"] |= {"heartbeat": 1}  # stale after 4 s without a heartbeat
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(micro))
    cfg = SearchParams(n_trials=N_TRIALS, population_size=4, votes=3, max_new_tokens=8)
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    with postgres_server() as pg:
        storage = open_storage(pg.url, tmp_path / "unused.journal", heartbeat=1)
        study = create_or_load(storage, worker_inputs(root, cfg), seed=0)
        cmd = search_cmd(study.study_name, pg.url, params)

        def start(seed: int) -> subprocess.Popen:
            out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
            return subprocess.Popen([*cmd, "--seed", str(seed)], cwd=root, env=env, **out)

        # The victim runs alone until it is inside a trial; SIGSTOP freezes it there, so the
        # trial it holds is known for certain before the survivor starts and the kill lands.
        victim, survivor = start(11), None
        try:

            def victims_running_trial():
                trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                mine = [
                    t for t in trials if t.user_attrs.get("worker", "").endswith(f"-{victim.pid}")
                ]
                return mine[0] if mine else None

            def frozen_inside_a_trial():
                # A trial takes milliseconds on the micro model: single-step the victim with
                # SIGSTOP/SIGCONT until it is frozen after drawing both scales (inside the
                # evaluation), or has finished the trial.
                if victim.poll() is not None:
                    raise AssertionError(f"the first worker exited:\n{victim.communicate()[0]}")
                if (trial := victims_running_trial()) is None:
                    return None
                _freeze(victim.pid)
                while (
                    now := study._storage.get_trial(trial._trial_id)
                ).state == TrialState.RUNNING:
                    if len(now.params) == 2:
                        return now
                    os.kill(victim.pid, signal.SIGCONT)
                    time.sleep(0.002)
                    _freeze(victim.pid)
                os.kill(victim.pid, signal.SIGCONT)  # it finished that trial first: try the next
                return None

            killed = _wait_for(frozen_inside_a_trial, 120, "a trial of the first worker")
            survivor = start(12)
            # the frozen worker's heartbeat stops: the survivor sees its trial go stale
            _wait_for(lambda: study.get_trials(states=(TrialState.FAIL,)), 120, "a stale trial")
            os.kill(victim.pid, signal.SIGKILL)
            victim_out = victim.communicate(timeout=30)[0]
            survivor_out = survivor.communicate(timeout=300)[0]
        finally:
            for proc in (victim, survivor):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        assert victim.returncode == -signal.SIGKILL
        assert survivor.returncode == 0, survivor_out

        study = optuna.load_study(study_name=study.study_name, storage=storage)
        by_state = {s: study.get_trials(states=(s,)) for s in TrialState}
        assert len(by_state[TrialState.COMPLETE]) == N_TRIALS  # exactly: no overshoot
        assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
        # the killed trial went stale, failed, and its re-queued copy completed
        failed = [t.number for t in by_state[TrialState.FAIL]]
        assert killed.number in failed
        retried = {
            RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t
            for t in by_state[TrialState.COMPLETE]
        }
        assert killed.number in retried
        assert retried[killed.number].params == killed.params
        # the Pareto front is drawn from completed trials only
        complete = {t.number for t in by_state[TrialState.COMPLETE]}
        rows = trials_table(study)
        assert {r["trial"] for r in rows} == complete and any(r["pareto"] for r in rows)
        assert {t.number for t in study.best_trials} <= complete
        for text in (victim_out, survivor_out, pg.log.read_text()):
            assert pg.password not in text
