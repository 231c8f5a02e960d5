"""The study: its storage, the objective, the workers that share it, and what it found.

One study lives in an Optuna RDB storage: SQLite in the project by default, or a PostgreSQL URL that workers on
several machines point at. Every worker loads the same study and asks it for trials until the study holds
`tune.n_trials` of them, so rerunning `evergreen tune` resumes a stopped study and a worker started elsewhere
(`evergreen tune --worker`) joins a running one. The study's first trial is the params as they are (no
suggestion), so what the search found is compared with the hand-set params under the same conditions.

The objective is the declared metric (`promote.metric`) on the valid split; the test split is never read here.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from typing import Any, get_args

import optuna
from optuna.trial import TrialState

from evergreen.config import ModelConfig, Params, with_overrides
from evergreen.data.io import read_json
from evergreen.errors import ConfigError, TrainingDiverged, TuneError
from evergreen.model.metrics import metric
from evergreen.tuning.space import decode, suggest, trial_params
from evergreen.workspace import Workspace

# a worker's heartbeat: a trial whose worker was killed is marked failed after the grace period, so a stopped
# study resumes without counting it as running forever
HEARTBEAT_S = 10
GRACE_S = 60
BASELINE = "baseline"  # the user attr of the trial that trains the params as they are
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def metric_of(params: Params) -> str:
    """The declared metric the study optimises (the gate's: `promote.metric`, or the task's default)."""
    return params.promote.metric_for(params.data.task)


def direction_of(params: Params) -> str:
    return "minimize" if metric(metric_of(params)).lower_is_better else "maximize"


def storage_url(ws: Workspace) -> str:
    """`tune.storage` as a SQLAlchemy URL: the project's SQLite file, a URL, or the URL in a named env var."""
    secret = ws.params.tune.storage
    if secret is None:
        return f"sqlite:///{ws.at(ws.params.tune.output_dir) / 'study.db'}"
    declared = secret.get_secret_value()  # revealed for Optuna only: messages show it through `shown`
    url = declared
    if "://" not in declared:
        url = os.environ.get(declared, "")
        if not url:
            raise ConfigError(
                f"tune.storage: the environment variable {declared!r} is not set (set it to a database URL such "
                "as postgresql://user:password@host/db, or write the URL itself in tune.storage)"
            )
    for plain in ("postgresql://", "postgres://"):  # SQLAlchemy's plain scheme means psycopg2; psycopg 3 ships
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url.removeprefix(plain)
    return url


def shown(url: str) -> str:
    """A storage URL fit to print: the password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: say it as it is, there is no password to hide
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at `url` (tables created on first use); a clear error when the database is unreachable."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # several local workers write one file: wait for the lock instead of failing at once
        engine = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.9
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
            )
    except Exception as exc:  # SQLAlchemy's errors (no driver, refused, bad credentials) vary with the backend
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise TuneError(f"cannot open the study storage {shown(url)}: {reason}") from None


def _sampler_and_pruner(params: Params) -> dict[str, Any]:
    cfg = params.tune
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: a worker treats the others' running trials as bad, so parallel workers spread out
        sampler = optuna.samplers.TPESampler(constant_liar=True)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=cfg.prune_startup_trials, n_warmup_steps=cfg.prune_warmup_epochs
    )
    return {"sampler": sampler, "pruner": pruner}


def open_study(ws: Workspace, create: bool = True) -> optuna.Study:
    """The study named `tune.study` in the storage, created (with the baseline trial queued) when new."""
    url = storage_url(ws)
    storage = open_storage(url)
    name, direction = ws.params.tune.study, direction_of(ws.params)
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage, **_sampler_and_pruner(ws.params))
        except KeyError:
            raise TuneError(f"no study named {name!r} in {shown(url)}: run `evergreen tune` first") from None
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction, load_if_exists=True, **_sampler_and_pruner(ws.params)
    )
    if study.direction.name.lower() != direction:
        raise TuneError(
            f"study {name!r} in {shown(url)} was created to {study.direction.name.lower()}, but "
            f"{metric_of(ws.params)} is to {direction}: name a new study in tune.study"
        )
    if not study.get_trials(deepcopy=False):
        study.set_user_attr("metric", metric_of(ws.params))
        study.enqueue_trial({}, user_attrs={BASELINE: True})
    return study


def objective(trial: optuna.Trial, base: Params, train: Any, valid: Any) -> float:
    """Train one trial's params on train; its valid metric each epoch feeds the pruner; return the best epoch's."""
    from evergreen.model.train import train_model  # torch: only where a trial trains

    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("pid", os.getpid())
    values = {} if trial.user_attrs.get(BASELINE) else suggest(trial, base.tune.space)
    params = trial_params(base, values)
    name = metric_of(base)
    key = f"valid_{name}"

    def report(record: dict[str, float]) -> None:
        if key not in record:  # e.g. ROC AUC on a valid split with one class: nothing to judge this epoch by
            return
        epoch = int(record["epoch"])
        trial.report(record[key], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: valid {name} {record[key]:.4g}, worse than the median")

    result = train_model(
        train, valid, params.data, params.model, params.train,
        on_epoch=report, params=params.model_dump(mode="json"), progress=False,
    )  # fmt: skip
    for attr in ("best_epoch", "epochs_run", "seconds"):
        trial.set_user_attr(attr, result.metrics[attr])
    return float(result.metrics["valid"][name])


def _count(study: optuna.Study) -> int:
    """Trials that count towards n_trials: finished ones, and those running now (a stale one is failed first)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def tuned_family(params: Params, index: dict[str, Any] | None) -> str:
    """The network family a study trains: `model.type`, or with `model.type: auto` the network the last auto run
    ranked first (`index`: its `models/candidates/index.json`, chosen first, then best on valid). The search
    space is the networks' knobs: a tree or linear champion still has its best network tuned."""
    if params.model.type != "auto":
        return params.model.type
    networks = set(get_args(ModelConfig.model_fields["type"].annotation)) - {"auto"}
    rows = (index or {}).get("candidates", [])
    family = next((row["family"] for row in rows if row.get("family") in networks), None)
    if family is None:
        where = "models/candidates/index.json lists no network" if index else "no models/candidates/index.json"
        raise TuneError(
            f"model.type is auto and {where} to tune: run `dvc repro` first (auto trains mlp and tabm), "
            "or set model.type in params.yaml to the family to tune (mlp, resnet, ft_transformer or tabm)"
        )
    return family


def workspace_with(root: str, overrides: dict[str, Any] | None = None) -> Workspace:
    """The project at `root`, with `overrides` (dotted keys) applied to its params in memory, and `model.type:
    auto` resolved to the family a trial trains (`tuned_family`)."""
    ws = Workspace.open(root)
    params = with_overrides(ws.params, overrides) if overrides else ws.params
    index_file = ws.candidates / "index.json"
    index = read_json(index_file, TuneError, subject="the list of candidates is ") if index_file.exists() else None
    family = tuned_family(params, index)
    if family != params.model.type:
        params = params.model_copy(update={"model": params.model.model_copy(update={"type": family})})
    return Workspace(ws.root, params) if params is not ws.params else ws


def run_worker(root: str, overrides: dict[str, Any] | None = None, threads: int | None = None) -> dict[str, Any]:
    """One worker: ask the shared study for trials until it holds n_trials (or `tune.timeout_s` passes).

    Each worker checks the count before it asks for a trial, so with several workers the last asks can race
    and the study end a trial or so past n_trials (as with Optuna's `MaxTrialsCallback`), never short of it.

    Several run at once on one machine (`evergreen tune --workers N`), as Prefect tasks on Dask, or on other
    machines against the same database (`evergreen tune --worker`). Returns this worker's pid and trial count.
    """
    from evergreen.data.split import read_split

    if threads:
        import torch

        torch.set_num_threads(threads)
    ws = workspace_with(root, overrides)
    cfg = ws.params.tune
    study = open_study(ws)
    train, valid = read_split(ws, "train"), read_split(ws, "valid")
    started, ran = time.monotonic(), 0
    while _count(study) < cfg.n_trials:
        if cfg.timeout_s is not None and time.monotonic() - started > cfg.timeout_s:
            break
        # a combination the config refuses, or a diverging lr, fails that trial (recorded), not the worker
        study.optimize(
            lambda trial: objective(trial, ws.params, train, valid),
            n_trials=1, catch=(ConfigError, TrainingDiverged), gc_after_trial=False,
        )  # fmt: skip
        ran += 1
    return {"pid": os.getpid(), "host": socket.gethostname(), "trials": ran}


def run_workers(
    root: str, workers: int, overrides: dict[str, Any] | None = None, threads: int | None = None
) -> list[dict[str, Any]]:
    """`workers` processes on this machine sharing the study (one in this process when it is 1).

    Each has `threads` torch threads; by default the cores shared out among them, not oversubscribed.
    """
    ws = workspace_with(root, overrides)
    open_study(ws)  # created once here, not raced by the workers
    if workers == 1:
        return [run_worker(str(ws.root), overrides, threads)]
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_worker, str(ws.root), overrides, threads) for _ in range(workers)]
        return [f.result() for f in futures]


@dataclass
class StudySummary:
    """What a study found, as `evergreen tune` prints it and `tune/best.json` stores it."""

    study: str
    storage: str
    metric: str
    direction: str
    trials: dict[str, int]  # by state: complete, pruned, fail, running
    workers: list[str]  # host:pid of every worker that ran a trial
    best: dict[str, Any] | None  # number, value, params (params.yaml values; {} for the baseline trial)
    baseline: dict[str, Any] | None  # number, value of the trial with the params as they were
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(study: optuna.Study, params: Params, storage: str) -> StudySummary:
    """The study's counts, best trial and baseline trial."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in (*FINISHED, TrialState.RUNNING)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        top = study.best_trial
        best = {"number": top.number, "value": top.value, "params": decode(params.tune.space, top.params)}
    baseline = next(({"number": t.number, "value": t.value, "state": t.state.name.lower()}
                     for t in trials if t.user_attrs.get(BASELINE)), None)  # fmt: skip
    workers = sorted({t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs})
    return StudySummary(
        study=study.study_name, storage=shown(storage), metric=metric_of(params), direction=direction_of(params),
        trials=counts, workers=workers, best=best, baseline=baseline,
    )  # fmt: skip
