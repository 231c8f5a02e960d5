"""The `evergreen` command. Each subcommand is a thin shell: load the typed config, call library code.

Errors a user can cause (a bad params file, bad data, a failed expectation) are printed as one readable
message and exit with status 1, without a traceback.
"""

from __future__ import annotations

import datetime
import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from evergreen.config import ConfigError, load_params
from evergreen.errors import EvergreenError

app = typer.Typer(
    help="Evergreen: continuous training for deep-learning models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
expectations_app = typer.Typer(help="Great Expectations suites generated from the declared schema.")
app.add_typer(expectations_app, name="expectations")
models_app = typer.Typer(help="The model registry: versions and the champion.", no_args_is_help=True)
app.add_typer(models_app, name="models")

STAGES = ("ingest", "validate_raw", "clean", "validate_clean", "split", "train", "evaluate", "export", "promote")
PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", "-p", help="the params file")


@contextmanager
def _reported() -> Iterator[None]:
    """Errors a user can cause become one readable line on stderr and exit status 1, not a traceback."""
    try:
        yield
    except (ConfigError, EvergreenError) as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def stage(name: str = typer.Argument(..., help=f"one of: {', '.join(STAGES)}"), params: Path = PARAMS_OPTION):
    """Run one DVC stage (this is what `dvc.yaml` calls)."""
    if name not in STAGES:
        _fail(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    with _reported():
        config = load_params(params)
        module = importlib.import_module(f"evergreen.stages.{name}")
        module.run(config)


@expectations_app.command("generate")
def expectations_generate(
    params: Path = PARAMS_OPTION,
    force: bool = typer.Option(False, "--force", help="overwrite suites that already exist (and hand edits)"),
):
    """Write expectations/raw.json and expectations/clean.json from the declared schema."""
    from evergreen.validation.suites import write_suites

    with _reported():
        config = load_params(params)
        for path in write_suites(config.data, Path(config.validation.suites_dir), overwrite=force):
            typer.echo(f"wrote {path}")


@app.command()
def run(
    params: Path = PARAMS_OPTION,
    target: list[str] = typer.Option(None, "--target", "-t", help="a stage to bring up to date (repeatable)"),
    set_param: list[str] = typer.Option(None, "--set", "-S", help="override a params key: key=value"),
):
    """Run the pipeline flow here, without a Prefect server (Prefect's ephemeral mode), and summarise it."""
    from prefect.flows import load_flow_from_entrypoint

    from evergreen.orchestration.deploy import entrypoint
    from evergreen.orchestration.summary import parse_overrides, run_summary

    with _reported():
        load_params(params)
        overrides = parse_overrides(set_param or [])
        pipeline = load_flow_from_entrypoint(entrypoint("pipeline"))
        outcome = pipeline(workspace=".", targets=target or None, set_params=overrides)
    typer.echo(run_summary(outcome, Path(".")))


@app.command()
def deploy(params: Path = PARAMS_OPTION):
    """Register the deployments declared in `orchestration.deployments` and serve them (runs until stopped)."""
    from evergreen.orchestration.deploy import build_deployments, serve_deployments

    with _reported():
        config = load_params(params)
        served, lines = build_deployments(Path(".").resolve(), config.orchestration)
    for line in lines:
        typer.echo(f"deployment {line}")
    if served:
        typer.echo("serving; open the Prefect UI to watch runs, Ctrl+C to stop")
        serve_deployments(served)


def _registry(params: Path):
    from evergreen.registry.store import Registry

    return Registry(load_params(params).promote.registry_dir)


@models_app.command("list")
def models_list(params: Path = PARAMS_OPTION):
    """List registry versions; the champion is marked with *."""
    with _reported():
        registry = _registry(params)
        champion = registry.champion()
        for version in registry.versions():
            card = registry.card(version)
            metrics = card.get("metrics", {}).get("model", {})
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
            mark = "*" if version == champion else " "
            typer.echo(f"{mark} {version}  {card.get('registered_at', '')[:19]}  {shown}")
        if not registry.versions():
            typer.echo(f"no versions in {registry.root} yet: run `dvc repro` to train and promote one")


@models_app.command("show")
def models_show(version: str, params: Path = PARAMS_OPTION):
    """Print a version's model card."""
    with _reported():
        typer.echo(json.dumps(_registry(params).card(version), indent=2))


@models_app.command("promote")
def models_promote(version: str, params: Path = PARAMS_OPTION):
    """Make VERSION the champion by hand (atomic; the service picks it up)."""
    with _reported():
        _registry(params).promote(version, reason="promoted by hand")
    typer.echo(f"champion is now {version}")


@models_app.command("rollback")
def models_rollback(params: Path = PARAMS_OPTION):
    """Make the previous champion the champion again."""
    with _reported():
        version = _registry(params).rollback()
    typer.echo(f"rolled back: champion is now {version}")


@app.command()
def serve(
    params: Path = PARAMS_OPTION,
    host: str = typer.Option(None, "--host", help="address to bind (default serve.host, 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="port to listen on (default serve.port)"),
):
    """Serve the registry's champion over HTTP (POST /predict, /feedback; GET /health, /model)."""
    import uvicorn

    from evergreen.serving.app import create_app

    with _reported():
        config = load_params(params)
        overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        config = config.model_copy(update={"serve": config.serve.model_copy(update=overrides)})
        service = create_app(config)
    host, port = config.serve.host, config.serve.port
    typer.echo(f"serving {config.promote.registry_dir} on http://{host}:{port} (Ctrl+C to stop)")
    uvicorn.run(service, host=host, port=port, access_log=False, log_level="warning")


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
        done = score_file(load_params(params), input_file, output, model_version=version)
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

    with _reported():
        decision = monitor_once(load_params(params), Path("."))
    typer.echo(f"decision: {decision.action}")
    for reason in decision.reasons:
        typer.echo(f"  {reason}")


@app.command()
def simulate(
    params: Path = PARAMS_OPTION,
    output: Path = typer.Option(None, "--output", help="where summary.json and the plot go"),
    weeks: int = typer.Option(None, "--weeks", help="replay only this many windows (a quick look)"),
):
    """Backtest: replay the bundled history as traffic and compare never, periodic and drift retraining."""
    from evergreen.config import with_overrides
    from evergreen.monitoring.simulate import backtest

    with _reported():
        config = load_params(params)
        if weeks:
            end = config.simulate.start + datetime.timedelta(days=weeks * config.simulate.window_days)
            config = with_overrides(config, {"simulate.end": end.isoformat()})
        output = output or Path(config.simulate.output_dir)
        summary = backtest(config, output)
    for name, run in summary["policies"].items():
        typer.echo(f"{name:>9}: RMSE {run['rmse']:.2f}, {run['retrains']} retrains, {run['promotions']} promotions")
    if summary.get("drift_recovers") is not None:
        typer.echo(f"the drift policy recovers {summary['drift_recovers']:.0%} of the periodic policy's improvement")
    typer.echo(f"summary: {output / 'summary.json'}; plot: {output / summary['plot']}")


@app.command("check-config")
def check_config(params: Path = PARAMS_OPTION):
    """Validate the params file and say so."""
    with _reported():
        load_params(params)
    typer.echo(f"{params}: ok")


if __name__ == "__main__":
    app()
