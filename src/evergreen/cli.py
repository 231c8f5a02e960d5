"""The `evergreen` command. Each subcommand is a thin shell: load the typed config, call library code.

Errors a user can cause (a bad params file, bad data, a failed expectation) are printed as one readable
message and exit with status 1, without a traceback.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import typer

from evergreen.errors import EvergreenError
from evergreen.workspace import PARAMS_FILE, Workspace

app = typer.Typer(
    help="Evergreen: continuous training for deep-learning models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
expectations_app = typer.Typer(help="Great Expectations suites generated from the declared schema.")
app.add_typer(expectations_app, name="expectations")
models_app = typer.Typer(help="The model registry: versions and the champion.", no_args_is_help=True)
app.add_typer(models_app, name="models")

PARAMS_OPTION = typer.Option(
    Path(PARAMS_FILE), "--params", "-p", help="the project's params file; its folder is the project root"
)


@contextmanager
def _reported() -> Iterator[None]:
    """Errors a user can cause become one readable line on stderr and exit status 1, not a traceback."""
    try:
        yield
    except EvergreenError as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


class _Tee:
    """A text stream that writes to two: the terminal, and the orchestrator's copy of a stage's output."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def write(self, text: str) -> int:
        self.second.write(text)
        self.second.flush()  # the orchestrator follows the file while the stage runs
        return self.first.write(text)

    def flush(self) -> None:
        self.first.flush()

    def isatty(self) -> bool:
        return self.first.isatty()

    def __getattr__(self, name: str):
        return getattr(self.first, name)


@contextmanager
def _copied_output() -> Iterator[None]:
    """Copy stdout and stderr to the file an orchestrator named in EVERGREEN_STAGE_LOG, when it named one."""
    from evergreen.orchestration.dvcfile import STAGE_LOG_ENV

    target = os.environ.get(STAGE_LOG_ENV)
    if not target:
        yield
        return
    with open(target, "a") as copy:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, copy), _Tee(err, copy)
        try:
            yield
        except Exception:
            copy.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = out, err


def _workspace(params: Path) -> Workspace:
    """The project whose params file is `params` (validated here, once)."""
    return Workspace.open(params.resolve().parent, params)


@app.command()
def stage(name: str = typer.Argument(..., help="a stage declared in dvc.yaml")):
    """Run one DVC stage in the current project (this is what `dvc.yaml` calls; DVC reads params.yaml)."""
    from evergreen.orchestration.dvcfile import declared_stages

    with _copied_output(), _reported():
        ws = Workspace.open(".")
        declared = declared_stages(ws.dvc_yaml)
        if name not in declared:
            raise EvergreenError(f"unknown stage {name!r}; dvc.yaml declares: {', '.join(declared)}")
        importlib.import_module(f"evergreen.stages.{name}").run(ws)
    # The process ends here. The interpreter's last garbage collections would walk every object still alive
    # (polars, Dask, GX): about 0.35 s per stage process, five of them for each arrival of data. Frozen objects
    # are skipped, so one still alive in a reference cycle is never finalized: a stage closes its files and
    # writers itself (`with`, `finally`) and writes its outputs atomically before it returns.
    gc.freeze()


@expectations_app.command("generate")
def expectations_generate(
    params: Path = PARAMS_OPTION,
    force: bool = typer.Option(False, "--force", help="overwrite suites that already exist (and hand edits)"),
):
    """Write expectations/raw.json and expectations/clean.json from the declared schema."""
    from evergreen.validation.suites import write_suites

    with _reported():
        ws = _workspace(params)
        missing = ws.params.clean.missing
        for path in write_suites(ws.params.data, ws.suites_dir, overwrite=force, default_missing=missing):
            typer.echo(f"wrote {path}")


def _wait_for_other_runs(ws: Workspace) -> None:
    """Say so and wait when another run holds the workspace, before starting Prefect (two at once would race)."""
    from evergreen.errors import WorkspaceBusy
    from evergreen.orchestration.dag import workspace_lock

    try:
        with workspace_lock(ws.run_lock, wait=False):
            return
    except WorkspaceBusy:
        typer.echo(f"another run holds {ws.root} ({ws.show(ws.run_lock)}): waiting for it to finish")
    with workspace_lock(ws.run_lock, wait=True):
        typer.echo("the other run finished; starting")


# Prefect gives its temporary server 20 s to answer. Its first start in a Prefect home creates and migrates
# a database, which took longer than that on a 2-core machine: a first `evergreen run` failed with "Timed out
# while attempting to connect to ephemeral Prefect API server" (`tests/faults/test_pipeline_faults.py`)
TEMPORARY_SERVER_STARTUP_S = 180


def _patient_temporary_server() -> AbstractContextManager[Any]:
    """Prefect's settings while `evergreen run` may start its temporary server: at least
    `TEMPORARY_SERVER_STARTUP_S` for it to start (a longer timeout of the user's is kept)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as startup_timeout
    from prefect.settings import temporary_settings

    return temporary_settings({startup_timeout: max(startup_timeout.value(), TEMPORARY_SERVER_STARTUP_S)})


@app.command()
def run(
    target: list[str] = typer.Option(None, "--target", "-t", help="a stage to bring up to date (repeatable)"),
    set_param: list[str] = typer.Option(None, "--set", "-S", help="override a params key: key=value"),
):
    """Run the pipeline flow in the current project without a Prefect server (Prefect's ephemeral mode).

    Like `dvc repro`, it reads the project's params.yaml; `-S` changes it (validated first), like `dvc exp run -S`.
    """
    from prefect.flows import load_flow_from_entrypoint

    from evergreen.orchestration.deploy import entrypoint
    from evergreen.orchestration.summary import closing_summary, parse_overrides, run_summary

    with _reported():
        ws = Workspace.open(".")
        overrides = parse_overrides(set_param or [])
        _wait_for_other_runs(ws)
        pipeline = load_flow_from_entrypoint(str(ws.root / entrypoint("pipeline")))
        with _patient_temporary_server():
            outcome = pipeline(workspace=str(ws.root), targets=target or None, set_params=overrides)
    typer.echo(run_summary(outcome, Workspace.open(".")))
    typer.echo("\n" + closing_summary(Workspace.open(".")))


@app.command()
def summary(params: Path = PARAMS_OPTION):
    """Print the last run's closing summary again: leaderboard, promotion and why, reports, next command."""
    from evergreen.orchestration.summary import closing_summary

    with _reported():
        ws = _workspace(params)
        typer.echo(closing_summary(ws))


@app.command()
def deploy(params: Path = PARAMS_OPTION):
    """Register the deployments declared in `orchestration.deployments` and serve them (runs until stopped)."""
    from evergreen.orchestration.deploy import build_deployments, serve_deployments

    with _reported():
        ws = _workspace(params)
        served, lines = build_deployments(ws.root, ws.params.orchestration)
    for line in lines:
        typer.echo(f"deployment {line}")
    if served:
        typer.echo("serving; open the Prefect UI to watch runs, Ctrl+C to stop")
        serve_deployments(served)


def _registry(params: Path):
    from evergreen.registry.store import Registry

    ws = _workspace(params)
    return Registry(ws.registry, keep_versions=ws.params.promote.keep_versions)  # retention after a promotion


def _servable(params: Path):
    """The check a version passes before it becomes champion: its graph loads and fits the declaration."""
    from evergreen.inference import servable

    return servable(_workspace(params).params.data)


def _card(registry, version: str):
    """A version's model card, typed (a mistyped card is an error naming its file)."""
    from evergreen.artifacts.card import ModelCard
    from evergreen.registry.store import CARD

    return ModelCard.from_dict(registry.card(version), source=registry.path(version) / CARD)


@models_app.command("list")
def models_list(params: Path = PARAMS_OPTION):
    """List registry versions; the champion is marked with *, a shadow challenger with ~."""
    with _reported():
        registry = _registry(params)
        champion, shadow = registry.champion(), registry.shadow()
        for version in registry.versions():
            card = _card(registry, version)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in card.test_metrics.items() if v is not None)
            mark = "*" if version == champion else "~" if version == shadow else " "
            gone = "  (files removed: promote.keep_versions)" if "files_removed" in registry.card(version) else ""
            typer.echo(f"{mark} {version}  {(card.registered_at or '')[:19]}  {shown}{gone}")
        if not registry.versions():
            typer.echo(f"no versions in {registry.root} yet: run `dvc repro` to train and promote one")


@models_app.command("show")
def models_show(version: str, params: Path = PARAMS_OPTION):
    """Print a version's model card."""
    with _reported():
        typer.echo(json.dumps(_card(_registry(params), version).to_dict(), indent=2, default=str))


@models_app.command("promote")
def models_promote(version: str, params: Path = PARAMS_OPTION):
    """Make VERSION the champion by hand (atomic; the service picks it up)."""
    with _reported():
        changed = _registry(params).promote(version, reason="promoted by hand", verify=_servable(params))
    typer.echo(f"champion is now {version}" if changed else f"{version} is already the champion; nothing changed")


@models_app.command("rollback")
def models_rollback(params: Path = PARAMS_OPTION):
    """Make the previous champion the champion again."""
    with _reported():
        version = _registry(params).rollback(verify=_servable(params))
    typer.echo(f"rolled back: champion is now {version}")


@app.command()
def serve(
    params: Path = PARAMS_OPTION,
    host: str = typer.Option(None, "--host", help="address to bind (default serve.host, 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="port to listen on (default serve.port)"),
    workers: int = typer.Option(None, "--workers", help="server processes (default serve.workers, 1)"),
):
    """Serve the registry's champion over HTTP (POST /predict, /feedback; GET /health, /model)."""
    import uvicorn

    from evergreen.config import with_overrides
    from evergreen.serving.app import create_app, worker_environment

    with _reported():
        ws = _workspace(params)
        chosen = (("host", host), ("port", port), ("workers", workers))
        ws = Workspace(ws.root, with_overrides(ws.params, {f"serve.{k}": v for k, v in chosen if v is not None}))
        service = create_app(ws)  # every check (token, champion, log) before anything is bound
    host, port, workers = ws.params.serve.host, ws.params.serve.port, ws.params.serve.workers
    typer.echo(f"serving {ws.show(ws.registry)} on http://{host}:{port} with {workers} process(es) (Ctrl+C to stop)")
    if workers == 1:
        gc.freeze()  # see `app_from_env`
        uvicorn.run(service, host=host, port=port, access_log=False, log_level="warning")
        return
    service.state.service.close()  # each worker opens its own; this one only proved that they can
    with worker_environment(params.resolve(), host):  # what the workers read, and where they count together
        uvicorn.run(
            "evergreen.serving.app:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
        )


@app.command()
def predict(
    input_file: Path = typer.Option(..., "--input", "-i", help="CSV or Parquet file to score"),
    output: Path = typer.Option(..., "--output", "-o", help="where the predictions go (.csv or .parquet)"),
    params: Path = PARAMS_OPTION,
    version: str = typer.Option(None, "--version", help="a registry version (default: the champion)"),
):
    """Score a file in batch with the champion, as the service would; unscorable rows go to a side file."""
    from evergreen.serving.batch import score_file

    with _reported():
        done = score_file(_workspace(params), input_file, output, model_version=version)
    typer.echo(
        f"scored {done.rows_scored} of {done.rows_in} rows with {done.model_version} "
        f"({done.rows_per_second:,.0f} rows/s) -> {done.output}"
    )
    if done.quarantine is not None:
        typer.echo(f"{done.rows_quarantined} row(s) could not be scored, with reasons, -> {done.quarantine}")


@app.command()
def monitor(params: Path = PARAMS_OPTION):
    """Compare the latest prediction-log window with the champion's reference; record the policy's decision."""
    from evergreen.monitoring.monitor import monitor_once
    from evergreen.prediction_log.retention import apply_retention

    with _reported():
        ws = _workspace(params)
        # first: the window is read from what the log may keep
        deleted = apply_retention(ws.prediction_log_location, ws.params.serve.log_retention_days)
        decision = monitor_once(ws)
    if deleted is not None and deleted.predictions:
        days = ws.params.serve.log_retention_days
        typer.echo(f"retention: deleted {deleted.predictions} prediction(s) older than {days:g} days")
    typer.echo(f"decision: {decision.action}")
    for reason in decision.reasons:
        typer.echo(f"  {reason}")


@app.command()
def forget(
    id: str = typer.Option(..., "--id", help="the value of the id column (data.columns, role: id)"),
    params: Path = PARAMS_OPTION,
):
    """Remove one id's predictions and labels from the prediction log (the right to erasure)."""
    from evergreen.prediction_log.retention import forget_id

    with _reported():
        ws = _workspace(params)
        deleted = forget_id(ws.prediction_log_location, ws.params.data, id)
    shadow = f" and {deleted.shadow} shadow answer(s)" if deleted.shadow else ""
    # the value is not echoed: it may be personal, and terminals are logged
    typer.echo(f"removed {deleted.predictions} prediction(s) of that id, with their labels{shadow}")


@app.command()
def shadow(
    params: Path = PARAMS_OPTION,
    check: bool = typer.Option(False, "--check", help="decide now: promote or discard the shadow when it is due"),
):
    """The shadow challenger's standing against the champion on labelled live traffic (`promote.shadow`)."""
    from evergreen.registry.shadow import check_shadow

    with _reported():
        verdict = check_shadow(_workspace(params), act=check)
    if verdict is None:
        typer.echo("no shadow model: the champion serves alone")
        return
    typer.echo(
        f"shadow {verdict.version} vs champion {verdict.champion}: {verdict.outcome} "
        f"({verdict.labelled_rows} of {verdict.min_labels} labelled records, "
        f"{verdict.waited_hours:.1f} of {verdict.max_wait_hours:g} h)"
    )
    for reason in verdict.reasons:
        typer.echo(f"  {reason}")
    if not check and verdict.outcome != "waiting":
        typer.echo("  (not carried out: run `evergreen shadow --check` to decide now)")


@app.command()
def simulate(
    params: Path = PARAMS_OPTION,
    output: Path = typer.Option(None, "--output", help="where summary.json and the plot go"),
    weeks: int = typer.Option(None, "--weeks", help="replay only this many windows (a quick look)"),
):
    """Backtest: replay the history as traffic and compare never, periodic and drift retraining on the declared
    metric."""
    from evergreen.backtest import backtest
    from evergreen.backtest.sandbox import replay_start
    from evergreen.config import with_overrides

    with _reported():
        ws = _workspace(params)
        if weeks:
            end = replay_start(ws.params) + datetime.timedelta(days=weeks * ws.params.simulate.window_days)
            ws = Workspace(ws.root, with_overrides(ws.params, {"simulate.end": end.isoformat()}))
        output = (output or ws.backtest).resolve()
        summary = backtest(ws, output)
    label = summary.get("metric_label") or summary.get("metric")
    for name, run in summary["policies"].items():
        value = "n/a" if run["value"] is None else f"{run['value']:.4g}"
        typer.echo(f"{name:>9}: {label} {value}, {run['retrains']} retrains, {run['promotions']} promotions")
    if summary.get("drift_recovers") is not None:
        typer.echo(f"the drift policy recovers {summary['drift_recovers']:.0%} of the periodic policy's improvement")
    typer.echo(f"summary: {output / 'summary.json'}; plot: {output / summary['plot']}")


@app.command()
def init(
    table: Path = typer.Argument(..., help="a CSV or Parquet file of the dataset"),
    target: str = typer.Option(..., "--target", "-t", help="the column to predict"),
    task: str = typer.Option(None, "--task", help="regression or classification (default: from the target)"),
    timestamp: str = typer.Option(None, "--timestamp", help="the time column (default: the first date column)"),
    id_column: str = typer.Option(None, "--id", help="the row key (default: a unique integer or string key)"),
    margin: float = typer.Option(0.1, "--margin", help="ranges are the data's, widened by this share of the span"),
    force: bool = typer.Option(False, "--force", help="replace the existing declaration (data: and split:)"),
    params: Path = PARAMS_OPTION,
):
    """Declare a dataset from a table: write params.yaml's data: and split: sections and the expectation suites."""
    from evergreen.declare.infer import infer as infer_declaration
    from evergreen.declare.write import declare, read_table
    from evergreen.validation.suites import write_suites

    with _reported():
        if task not in (None, "regression", "classification"):
            raise EvergreenError(f"--task must be regression or classification, not {task!r}")
        root = params.resolve().parent
        frame = read_table(table)
        inferred = infer_declaration(frame, target, task=task, timestamp=timestamp, id_column=id_column, margin=margin)
        done = declare(root, params.resolve(), table, inferred, force)
        suites_dir = Workspace(root, done.params).suites_dir
        suites = write_suites(done.params.data, suites_dir, overwrite=True, default_missing=done.params.clean.missing)
    width = max(len(c.name) for c in inferred.columns)
    typer.echo(f"{table}: {frame.height} rows, {frame.width} columns; data.source: {done.source}")
    typer.echo(f"{'column':<{width}}  {'type':<8}  {'role':<9}  {'kind':<11}  why")
    for column in inferred.columns:
        kind, column_type = column.declaration.get("kind", ""), column.declaration["type"]
        typer.echo(f"{column.name:<{width}}  {column_type:<8}  {column.role:<9}  {kind:<11}  {column.reason}")
    typer.echo(f"task: {inferred.task} ({inferred.task_reason})")
    typer.echo(f"target transform: {inferred.target_transform} ({inferred.target_transform_reason})")
    typer.echo(f"split: {inferred.split_reason}")
    typer.echo(f"derived features: {inferred.derived_reason}")
    for reset in done.resets:
        typer.echo(f"reset {reset}")
    for warning in done.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {params} and {', '.join(str(p) for p in suites)}; next: dvc repro")


@app.command()
def tune(
    params: Path = PARAMS_OPTION,
    workers: int = typer.Option(None, "--workers", min=1, help="worker processes here (default tune.workers)"),
    trials: int = typer.Option(None, "--trials", min=1, help="trials in all workers together (tune.n_trials)"),
    storage: str = typer.Option(None, "--storage", help="a database URL, or an env var holding one (tune.storage)"),
    study: str = typer.Option(None, "--study", help="the study's name (default tune.study); a rerun resumes it"),
    worker: bool = typer.Option(False, "--worker", help="run one worker on the shared study, then exit"),
    apply: bool = typer.Option(False, "--apply", help="write the best trial's params into params.yaml, then exit"),
    experiment: bool = typer.Option(True, "--exp/--no-exp", help="run the best trial as a DVC experiment"),
):
    """Search train.* and model.* (tune.space) with Optuna on the valid split; the study resumes when rerun."""
    from evergreen.config import with_overrides

    chosen = {"tune.workers": workers, "tune.n_trials": trials, "tune.storage": storage, "tune.study": study}
    overrides = {k: v for k, v in chosen.items() if v is not None}
    with _reported():
        ws = _workspace(params)
        ws = Workspace(ws.root, with_overrides(ws.params, overrides))  # validated before anything runs
        if apply:
            from evergreen.tuning.apply import apply_best

            values = apply_best(ws)
            shown = " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
            typer.echo(f"wrote {shown} into {ws.show(ws.params_file)}; next: dvc repro" if values else
                       "the current params are the study's best: params.yaml unchanged")  # fmt: skip
            return
        from evergreen.tuning.run import finish
        from evergreen.tuning.run import tune as run_tune
        from evergreen.tuning.study import run_worker

        if worker:
            done = run_worker(str(ws.root), overrides)
            typer.echo(f"worker {done['host']}:{done['pid']} ran {done['trials']} trial(s)")
            outcome = finish(str(ws.root), overrides)
        else:
            outcome = run_tune(str(ws.root), overrides)
        for line in outcome.lines:
            typer.echo(line)
        if experiment and not worker:
            from evergreen.tuning.apply import record_best

            name = record_best(ws)
            if name is not None:
                typer.echo(f"experiment {name}: the best trial's params, trained and evaluated; see `dvc exp show`")


@app.command("check-config")
def check_config(params: Path = PARAMS_OPTION):
    """Validate the params file and say so."""
    with _reported():
        _workspace(params)
    typer.echo(f"{params}: ok")


if __name__ == "__main__":
    app()
