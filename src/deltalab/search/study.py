"""The Optuna study of the merge search: storage, identity, workers, Pareto front, chosen point.

Identity: a study is named `dots-<cond>-<seed>-<digest>`, where the digest covers everything that
decides its trials (the two vectors' metadata, the queries file, the objective and sampler
params; not `n_trials`, `select` or `storage`). The same inputs reopen the same study, so a search
killed midway keeps its finished trials; changed inputs start a new one.

Storage: a journal file (default `.deltalab/studies/<cond>-<seed>.journal`; safe for several
processes on one machine or NFS), or an RDB URL. On RDB storage workers send heartbeats, and a
trial of a killed worker is re-queued (`RetryHeartbeatStaleTrialCallback`); a journal file has no
heartbeats, so the stage fails trials left RUNNING by a killed run when it reopens its study.

Workers: the stage and any number of `deltalab search` processes optimize one study; each
NSGA-II sampler gets its own seed (workers sharing a seed would suggest the same points) and all
stop once the study holds `n_trials` completed trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from deltalab.atomic import atomic_file
from deltalab.errors import ConfigError, DataError
from deltalab.search.params import SearchParams

DEFAULT_DIR = Path(".deltalab/studies")
DIRECTIONS = ("maximize", "minimize")  # consistency, perplexity
OBJECTIVES = ("consistency", "perplexity")
PARAMS = ("scale_sft", "scale_rlvr")
STUDY_KEYS = (
    "votes", "temperature", "top_p", "max_new_tokens", "seed", "scale_sft", "scale_rlvr",
    "population_size",
)  # fmt: skip


def redact(url: str) -> str:
    """A storage URL safe to print (no password)."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: keep only the scheme
        return url.split("://", 1)[0] + "://…"


def default_storage_path(member: str) -> Path:
    return DEFAULT_DIR / f"{member}.journal"


def open_storage(
    url: str | None, default_path: Path, heartbeat: int = 30
) -> optuna.storages.BaseStorage:
    """`None` → journal file at `default_path`; a path ending in .log/.journal (or `journal:PATH`)
    → that journal file; anything else → an RDB URL whose workers send a heartbeat every
    `heartbeat` seconds (a trial silent for 4x that is stale and re-queued once or twice)."""
    if url is None or url.startswith("journal:") or url.endswith((".log", ".journal")):
        path = Path(default_path if url is None else url.removeprefix("journal:"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        except OSError as exc:
            raise ConfigError(f"search.storage: cannot open journal file {path}: {exc}") from exc
    if "://" not in url:
        raise ConfigError(
            f"search.storage {redact(url)!r}: expected an RDB URL (postgresql://, mysql://, "
            "sqlite:///...) or a journal file path ending in .log or .journal"
        )
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=4 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=2
                ),
            )
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"search.storage {redact(url)!r}: cannot open the study storage ({first[:200]})"
        ) from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class StudyInputs:
    """What a worker needs to rebuild the objective, with the digests that pin it."""

    member: str  # <cond>-<seed>
    base: str  # checkpoint directory (relative to the repository root)
    vectors: tuple[str, str]  # sft, rlvr
    queries: str
    vector_digests: tuple[str, str]  # sha256 of each vector's metadata (its content identity)
    queries_digest: str
    search: dict[str, Any]  # the STUDY_KEYS of the search params
    n_trials: int
    method: dict[str, Any] | None = None  # `search.params.trial_method`; None: task arithmetic

    @property
    def digest(self) -> str:
        key = {
            "vectors": self.vector_digests,
            "queries": self.queries_digest,
            "search": self.search,
        }
        if self.method is not None:  # absent for task arithmetic: older studies keep their names
            key["method"] = self.method
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    @property
    def ranges(self) -> dict[str, Sequence[float]]:
        """The scales' ranges, then the searched method parameters'."""
        method_ranges = self.method["ranges"] if self.method else {}
        return {p: self.search[p] for p in PARAMS} | method_ranges

    @property
    def name(self) -> str:
        return f"dots-{self.member}-{self.digest[:10]}"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudyInputs:
        raw = json.loads(text)
        raw["vectors"] = tuple(raw["vectors"])
        raw["vector_digests"] = tuple(raw["vector_digests"])
        return cls(**raw)


def vector_digest(meta: dict[str, str]) -> str:
    """The vector's metadata pins its content (per-tensor base/finetuned hashes, k, scale)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def study_inputs(
    member: str,
    base: Path,
    vectors: Sequence[tuple[Path, dict[str, str]]],
    queries: Path,
    cfg: SearchParams,
    method: dict[str, Any] | None = None,
) -> StudyInputs:
    (sft, sft_meta), (rlvr, rlvr_meta) = vectors
    return StudyInputs(
        member=member,
        base=str(base),
        vectors=(str(sft), str(rlvr)),
        queries=str(queries),
        vector_digests=(vector_digest(sft_meta), vector_digest(rlvr_meta)),
        queries_digest=file_sha256(queries),
        search={k: getattr(cfg, k) for k in STUDY_KEYS},
        n_trials=cfg.n_trials,
        method=method,
    )


def sampler(population_size: int, seed: int) -> optuna.samplers.NSGAIISampler:
    return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)


def create_or_load(
    storage: optuna.storages.BaseStorage, inputs: StudyInputs, seed: int
) -> optuna.Study:
    """The study of these inputs (created, or reopened with its finished trials)."""
    study = optuna.create_study(
        study_name=inputs.name,
        storage=storage,
        directions=list(DIRECTIONS),
        sampler=sampler(inputs.search["population_size"], seed),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("inputs")
    if stored is None:
        study.set_user_attr("inputs", inputs.to_json())
    elif StudyInputs.from_json(stored).digest != inputs.digest:  # a name collision: never mix
        raise ConfigError(f"study {inputs.name} in this storage was made from other inputs")
    return study


def load_for_worker(
    storage: optuna.storages.BaseStorage, name: str, seed: int
) -> tuple[optuna.Study, StudyInputs]:
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=None)
    except KeyError:
        raise ConfigError(
            f"no study {name!r} in this storage: start it with `dvc repro search@<cond>-<seed>` "
            "(its log prints the study name and storage)"
        ) from None
    stored = study.user_attrs.get("inputs")
    if stored is None:
        raise ConfigError(f"study {name!r} was not created by deltalab (no inputs recorded)")
    inputs = StudyInputs.from_json(stored)
    study.sampler = sampler(inputs.search["population_size"], seed)
    return study, inputs


def fail_running(study: optuna.Study) -> int:
    """Mark trials left RUNNING (a killed worker on journal storage) as failed; returns count."""
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
    return len(stale)


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def optimize(
    study: optuna.Study,
    evaluate: Callable[[Sequence[float]], Any],
    ranges: dict[str, Sequence[float]],
    target: int,
    max_trials: int | None = None,
    worker: str = "stage",
    progress: bool = True,
) -> int:
    """Run trials until the study holds exactly `target` completed ones (or this worker ran
    `max_trials`); `evaluate(scales, values)` returns an object with consistency, perplexity,
    seconds. `ranges` names the scales (`PARAMS`) and any searched method parameters, which
    reach `evaluate` as the dict `values` (empty when only the scales are searched).

    Other workers' RUNNING trials count toward the target: a worker that would overshoot waits
    for them instead. On RDB storage a trial whose worker died goes stale after its heartbeats
    stop, fails, and is re-queued (`RetryHeartbeatStaleTrialCallback`); the waiting worker runs
    it. A trial whose objectives are NaN (weights that break the model) fails and does not count;
    more failures than `target` stop the search with an error. Returns trials run here."""
    from tqdm.auto import tqdm

    ran = 0
    seen: dict[tuple[float, ...], Any] = {}  # NSGA-II re-suggests parents; the objective is
    # deterministic, so a repeated point reuses its result instead of sampling again

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        nonlocal ran
        ran += 1
        trial.set_user_attr("worker", worker)  # first: a RUNNING trial names its worker
        point = {p: trial.suggest_float(p, *bounds) for p, bounds in ranges.items()}
        scales = [point.pop(p) for p in PARAMS]
        key = (*scales, *point.values())
        if key not in seen:
            seen[key] = evaluate(scales, point)
        result = seen[key]
        if not (math.isfinite(result.consistency) and math.isfinite(result.perplexity)):
            return float("nan"), float("nan")  # optuna marks the trial FAIL
        return result.consistency, result.perplexity

    counts = _trial_counts(study)
    budget = (
        max_trials if max_trials is not None else 2 * (target - counts[TrialState.COMPLETE]) + 1
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bar = tqdm(total=target, initial=counts[TrialState.COMPLETE], desc="search", unit="trial",
               disable=not progress)  # fmt: skip
    with bar:
        while counts[TrialState.COMPLETE] < target and ran < budget:
            in_flight = counts[TrialState.COMPLETE] + counts[TrialState.RUNNING]
            if in_flight >= target and not counts[TrialState.WAITING]:
                time.sleep(POLL_SECONDS)  # others' trials will finish, or go stale and return
            else:
                study.optimize(objective, n_trials=1, gc_after_trial=False)
            counts = _trial_counts(study)
            bar.n = counts[TrialState.COMPLETE]
            bar.refresh()
    done = counts[TrialState.COMPLETE]
    if max_trials is None and done < target:
        raise DataError(
            f"study {study.study_name}: only {done} of {target} trials completed "
            f"({counts[TrialState.FAIL]} failed with NaN objectives): narrow search.scale_sft / "
            "search.scale_rlvr"
        )
    return ran


POLL_SECONDS = 0.5


def _trial_counts(study: optuna.Study) -> dict[TrialState, int]:
    """Trials by state, after failing (and re-queueing) the stale ones where heartbeats run."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9; a no-op on journals
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


# --------------------------------------------------------------------------- results


def trials_table(study: optuna.Study) -> list[dict[str, Any]]:
    """Completed trials by number with their scales, objectives and Pareto membership."""
    trials = sorted(complete_trials(study), key=lambda t: t.number)
    front = {t.number for t in study.best_trials}
    return [
        {
            "trial": t.number,
            "scale_sft": t.params["scale_sft"],
            "scale_rlvr": t.params["scale_rlvr"],
            **{k: v for k, v in t.params.items() if k not in PARAMS},  # searched method params
            "consistency": t.values[0],
            "perplexity": t.values[1],
            "pareto": t.number in front,
        }
        for t in trials
    ]


def select(rows: Sequence[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The chosen Pareto trial.

    knee: scale consistency and perplexity to [0, 1] over all completed trials and take the
    Pareto trial closest (Euclidean) to the ideal point (best of both); max_consistency /
    min_perplexity: the extreme of the front, the other objective breaking ties. Remaining ties:
    the lowest trial number.
    """
    front = [r for r in rows if r["pareto"]]
    if not front:
        raise DataError("the search has no completed trial")
    if rule == "max_consistency":
        key = lambda r: (-r["consistency"], r["perplexity"], r["trial"])  # noqa: E731
    elif rule == "min_perplexity":
        key = lambda r: (r["perplexity"], -r["consistency"], r["trial"])  # noqa: E731
    elif rule == "knee":
        c = [r["consistency"] for r in rows]
        p = [r["perplexity"] for r in rows]

        def unit(x: float, lo: float, hi: float) -> float:
            return (x - lo) / (hi - lo) if hi > lo else 0.0

        def key(r):
            dc = 1.0 - unit(r["consistency"], min(c), max(c))
            dp = unit(r["perplexity"], min(p), max(p))
            return (math.hypot(dc, dp), r["trial"])
    else:
        raise ConfigError(f"search.select: unknown rule {rule!r}")
    return min(front, key=key)


def write_trials(rows: Sequence[dict[str, Any]], report_dir: Path, plots_dir: Path) -> None:
    """`trials.csv` and `pareto.csv` into the (already atomic) report directory, in trial order,
    and into the plot-data directory, the front sorted by perplexity as `dvc plots` draws it."""
    trials, front = pd.DataFrame(rows), pd.DataFrame([r for r in rows if r["pareto"]])
    trials.to_csv(report_dir / "trials.csv", index=False)
    front.to_csv(report_dir / "pareto.csv", index=False)
    for name, table in {"trials": trials, "pareto": front.sort_values("perplexity")}.items():
        with atomic_file(plots_dir / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)


def search_metrics(
    study: optuna.Study,
    rows: Sequence[dict[str, Any]],
    chosen: dict[str, Any],
    references: dict[str, dict[str, float]],
    n_queries: int,
    rule: str,
    method: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The search stage's metrics: the study, its size and front, the chosen point by `rule`
    (with any searched method parameters), the reference merges' objectives and the number of
    queries; the trials' merge method (`StudyInputs.method`) unless it is task arithmetic."""
    searched = list(method["ranges"]) if method else []
    metrics = {
        "study": study.study_name,
        "trials": len(rows),
        "pareto_size": sum(1 for r in rows if r["pareto"]),
        "select": rule,
        "chosen": {
            k: chosen[k] for k in ("trial", *PARAMS, *searched, "consistency", "perplexity")
        },
        **references,
        "queries": n_queries,
    }
    if method is not None:
        metrics["method"] = method
    return metrics


def open_search_study(
    storage: optuna.storages.BaseStorage, inputs: StudyInputs, cfg: SearchParams
) -> optuna.Study:
    """Create or reopen the study of `inputs`; on the default journal storage, fail the trials a
    killed run left RUNNING. Prints how more workers join it (the URL without its password)."""
    study = create_or_load(storage, inputs, cfg.seed)
    stale = fail_running(study) if cfg.storage is None else 0
    print(
        f"study {study.study_name} ({len(study.trials)} trials stored, {stale} stale failed); "
        f"more workers: deltalab search --study {study.study_name}"
        + (f" --storage {redact(cfg.storage)}" if cfg.storage else "")
    )
    return study
