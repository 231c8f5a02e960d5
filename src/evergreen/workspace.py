"""The workspace: every path of one Evergreen project, built from its root folder and its typed config.

With `dvc.yaml`'s outs, this is the project's data catalog. Stages, flows, the service and the backtest take a
`Workspace` and ask it where things live; nothing else joins project paths, and no code changes the working
directory, so several workspaces (the backtest's copies, a test's temporary project) can live in one process.

Locations the user declares in `params.yaml` (the source, the landing folder, the registry, the prediction log,
monitoring's outputs) are read from the config; the stages' own outputs are fixed here and listed as outs in
`dvc.yaml`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from evergreen.config import Params, load_params, mask_url
from evergreen.errors import EvergreenError

__all__ = ["PARAMS_FILE", "SPLITS", "LogLocation", "Workspace"]

PARAMS_FILE = "params.yaml"
SPLITS = ("train", "valid", "test")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, repr=False)
class LogLocation:
    """Where the prediction log lives: a SQLite file (`path`) or a PostgreSQL database (`url`).

    Decided once, by `Workspace.prediction_log_location`, and passed as it is to the log's writer, readers and
    retention: a bare `Path | str` made each of them guess the backend again from the text. The URL may hold a
    password, so it is kept as a secret: `str`, `repr` and `where` mask it, and only `secret_url()` reveals it,
    for the code that connects."""

    kind: Literal["sqlite", "postgresql"]
    path: Path | None = None
    url: SecretStr | None = None

    def __post_init__(self) -> None:
        sqlite = self.kind == "sqlite" and self.path is not None and self.url is None
        postgresql = self.kind == "postgresql" and self.path is None and self.url is not None
        if not (sqlite or postgresql):
            raise ValueError(f"a {self.kind} log location takes {'a path' if self.kind == 'sqlite' else 'a URL'}")
        if postgresql and not self.secret_url().startswith(_POSTGRES_SCHEMES):
            raise ValueError(f"not a PostgreSQL URL: {self.where}")

    @classmethod
    def sqlite(cls, path: Path | str) -> LogLocation:
        """The log in one SQLite file at `path`."""
        return cls("sqlite", path=Path(path))

    @classmethod
    def postgresql(cls, url: str | SecretStr) -> LogLocation:
        """The log in the PostgreSQL database at `url` (postgresql://user:password@host:port/database)."""
        # a plain SecretStr whatever came in (the config's masked kind, or text): equal URLs, equal locations
        return cls("postgresql", url=SecretStr(url.get_secret_value() if isinstance(url, SecretStr) else url))

    def secret_url(self) -> str:
        """The PostgreSQL URL with its password: for the code that connects, never for a message."""
        if self.url is None:
            raise ValueError(f"{self.where}: a SQLite log has no URL")
        return self.url.get_secret_value()

    @property
    def where(self) -> str:
        """The location fit for a message: the path, or the URL with its password masked."""
        return str(self.path) if self.path is not None else mask_url(self.secret_url())

    def __str__(self) -> str:
        return self.where

    def __repr__(self) -> str:
        return f"LogLocation({self.kind}: {self.where})"


@dataclass(frozen=True)
class Workspace:
    """One project root and its config; each property is an absolute path inside (or declared for) it."""

    root: Path
    params: Params

    @classmethod
    def open(cls, root: Path | str = ".", params_file: Path | str | None = None) -> Workspace:
        """The project at `root`, its config read (and validated) from `root/params.yaml` or `params_file`."""
        root = Path(root).resolve()
        return cls(root, load_params(Path(params_file) if params_file else root / PARAMS_FILE))

    def at(self, relative: str | Path) -> Path:
        """A declared location: relative paths are taken from the project root, absolute ones as they are."""
        return self.root / relative

    def show(self, path: Path) -> str:
        """A path as a person reads it: relative to the root when inside it."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # ------------------------------------------------------------------------------------------ the project
    @property
    def params_file(self) -> Path:
        return self.root / PARAMS_FILE

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

    @property
    def dvc_yaml(self) -> Path:
        return self.root / "dvc.yaml"

    @property
    def run_lock(self) -> Path:
        """Held by one orchestrated run at a time (DVC allows one `repro` per workspace)."""
        return self.root / ".dvc" / "tmp" / "evergreen-run.lock"

    def digest_cache(self, stage: str) -> Path | None:
        """Where `stage` keeps its inputs' hashes with their file stamps, beside DVC's own cache of hashes
        (`.dvc/tmp`, untracked); None outside a DVC project, where every input is hashed on each run."""
        dvc_dir = self.root / ".dvc"
        return dvc_dir / "tmp" / "evergreen-digests" / f"{stage}.json" if dvc_dir.is_dir() else None

    # ---------------------------------------------------------------------------------------------- data
    @property
    def source(self) -> str:
        """`data.source`: a URL or absolute path as declared, a relative path or glob taken from the root."""
        source = self.params.data.source
        return source if "://" in source else str(self.at(source))

    @property
    def incoming(self) -> Path:
        return self.at(self.params.data.incoming)

    # The data stages' datasets are folders of Parquet parts, one per arrival (see `data.partitions`), named
    # `*.parquet` as Spark names its datasets: `pl.scan_parquet(ws.clean)` reads one like a single file.
    # The folders below are the stages' outs in `dvc.yaml` (tests/unit/test_paths_agree.py holds them equal).
    @property
    def raw_dir(self) -> Path:
        """The `ingest` stage's out: the raw dataset, its key conflicts, key index and manifest."""
        return self.root / "data/raw"

    @property
    def raw(self) -> Path:
        return self.raw_dir / "raw.parquet"

    @property
    def raw_conflicts(self) -> Path:
        return self.raw_dir / "key_conflicts.parquet"

    @property
    def raw_keys(self) -> Path:
        """The key index: each raw partition's keys and row hashes, so dedup never rereads old partitions."""
        return self.raw_dir / "keys"

    @property
    def raw_manifest(self) -> Path:
        return self.raw_dir / "manifest.json"

    @property
    def clean_dir(self) -> Path:
        """An out of the `clean` stage: the clean dataset and its manifest."""
        return self.root / "data/clean"

    @property
    def clean(self) -> Path:
        return self.clean_dir / "clean.parquet"

    @property
    def clean_manifest(self) -> Path:
        return self.clean_dir / "manifest.json"

    @property
    def quarantine_dir(self) -> Path:
        """An out of the `clean` stage: the rows set aside, each with its reason."""
        return self.root / "data/quarantine"

    @property
    def quarantine(self) -> Path:
        return self.quarantine_dir / "quarantine.parquet"

    @property
    def split_dir(self) -> Path:
        """The `split` stage's out; later stages depend on its parts one by one (`split`)."""
        return self.root / "data/split"

    def split(self, name: str) -> Path:
        """One part written by the `split` stage: train, valid or test (a file, or a folder of parts)."""
        return self.split_dir / f"{name}.parquet"

    @property
    def split_manifest(self) -> Path:
        """A partitioned split's record of its parts (`data.split_partitions`)."""
        return self.split_dir / "manifest.json"

    # ------------------------------------------------------------------------------------------ metrics
    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def ingest_metrics(self) -> Path:
        return self.metrics_dir / "ingest.json"

    @property
    def data_metrics(self) -> Path:
        return self.metrics_dir / "data.json"

    @property
    def split_metrics(self) -> Path:
        return self.metrics_dir / "split.json"

    @property
    def train_metrics(self) -> Path:
        return self.metrics_dir / "train.json"

    @property
    def eval_metrics(self) -> Path:
        return self.metrics_dir / "eval.json"

    @property
    def export_metrics(self) -> Path:
        return self.metrics_dir / "export.json"

    @property
    def promotion_metrics(self) -> Path:
        return self.metrics_dir / "promotion.json"

    @property
    def leaderboard(self) -> Path:
        """Every candidate of the train stage: valid metric, fit time, test metric (written by `evaluate`)."""
        return self.metrics_dir / "leaderboard.json"

    # ---------------------------------------------------------------------------------------- validation
    @property
    def suites_dir(self) -> Path:
        return self.at(self.params.validation.suites_dir)

    def suite(self, stage: str) -> Path:
        return self.suites_dir / f"{stage}.json"

    @property
    def validation_reports(self) -> Path:
        return self.at(self.params.validation.reports_dir)

    def validation_report(self, stage: str) -> Path:
        return self.validation_reports / f"{stage}.json"

    def data_docs(self, stage: str) -> Path:
        return self.validation_reports / "docs" / stage

    def validation_parts(self, stage: str) -> Path:
        """Each partition's validation result, kept with its Data Docs so a partition is validated once."""
        return self.data_docs(stage) / "partitions.json"

    # -------------------------------------------------------------------------------------------- models
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def model(self) -> Path:
        return self.models_dir / "model.pt"

    @property
    def checkpoint(self) -> Path:
        return self.models_dir / "checkpoint.pt"

    @property
    def candidates(self) -> Path:
        """The train stage's candidates: `index.json` (valid metric, time, file of each) and those not chosen."""
        return self.models_dir / "candidates"

    @property
    def exported(self) -> Path:
        """The export stage's graphs of the candidates not chosen (`index.json`: parity of each), for the gate."""
        return self.models_dir / "exported"

    @property
    def onnx_model(self) -> Path:
        return self.models_dir / "model.onnx"

    @property
    def signature(self) -> Path:
        return self.models_dir / "signature.json"

    @property
    def model_card(self) -> Path:
        return self.models_dir / "model_card.json"

    @property
    def dvclive(self) -> Path:
        return self.root / "dvclive"

    @property
    def dvclive_plots(self) -> Path:
        """The training curves DVCLive writes under `dvclive` (its own layout): the plots `dvc.yaml` declares."""
        return self.dvclive / "plots" / "metrics"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, one folder per model family (with `train.tensorboard`)."""
        return self.root / "tensorboard"

    @property
    def eval_reports(self) -> Path:
        return self.root / "reports/eval"

    @property
    def predictions_csv(self) -> Path:
        """Regression plots: actual against predicted, and the error over time."""
        return self.eval_reports / "predictions.csv"

    @property
    def confusion_csv(self) -> Path:
        """The classification plot."""
        return self.eval_reports / "confusion.csv"

    @property
    def residuals_csv(self) -> Path:
        """The regression plot of residuals against predictions (header only for classification)."""
        return self.eval_reports / "residuals.csv"

    @property
    def calibration_csv(self) -> Path:
        """The classification plot: accuracy against confidence (header only for regression)."""
        return self.eval_reports / "calibration.csv"

    @property
    def test_predictions(self) -> Path:
        """Full-precision test predictions (serving checks itself against them)."""
        return self.eval_reports / "test_predictions.parquet"

    @property
    def registry(self) -> Path:
        return self.at(self.params.promote.registry_dir)

    # ---------------------------------------------------------------------------------------- monitoring
    @property
    def prediction_log(self) -> Path:
        """The SQLite prediction log (`serve.log_path`); see `prediction_log_location` for where it really is."""
        return self.at(self.params.serve.log_path)

    @property
    def prediction_log_location(self) -> LogLocation:
        """Where the service logs predictions and monitoring reads them: the PostgreSQL URL of `serve.log_url`
        (or of the environment variable `serve.log_url_env` names), else the SQLite file of `serve.log_path`.

        The one place that decides the log's backend; every reader and writer of the log is given its answer."""
        serve = self.params.serve
        if serve.log_url_env is None:
            if serve.log_url is not None:
                return LogLocation.postgresql(serve.log_url)
            return LogLocation.sqlite(self.prediction_log)
        url = os.environ.get(serve.log_url_env, "").strip()
        if not url.startswith(_POSTGRES_SCHEMES):
            held = "holds no URL" if not url else "does not hold a PostgreSQL URL"
            raise EvergreenError(
                f"serve.log_url_env names the environment variable {serve.log_url_env}, which {held}: "
                "set it to postgresql://user:password@host:port/database"
            )
        return LogLocation.postgresql(url)

    @property
    def monitor_reports(self) -> Path:
        return self.at(self.params.monitor.reports_dir)

    @property
    def evidently_workspace(self) -> Path:
        return self.at(self.params.monitor.workspace)

    @property
    def decisions(self) -> Path:
        return self.at(self.params.monitor.decisions)

    @property
    def feedback_state(self) -> Path:
        """How far labelled feedback has been landed (next to the prediction log it reads)."""
        return self.prediction_log.parent / "feedback_state.json"

    @property
    def backtest(self) -> Path:
        return self.at(self.params.simulate.output_dir)
