"""Stage `train`: `data/split/{train,valid}` into `models/model.pt`, `metrics/train.json`, DVCLive curves."""

from __future__ import annotations

import polars as pl

from dvclive import Live
from evergreen.config import Params
from evergreen.data import io, paths
from evergreen.errors import DataError
from evergreen.model.train import train_model


def read_split(name: str) -> pl.DataFrame:
    """One split written by the `split` stage; a missing file names the stage that makes it."""
    path = paths.split_path(name)
    if not path.exists():
        raise DataError(f"{path}: no such split (run `evergreen stage split` or `dvc repro split` first)")
    return pl.read_parquet(path)


def run(params: Params) -> None:
    # DVC removes outs before it runs a stage; do the same so a failed run never leaves an old model behind
    paths.MODEL.unlink(missing_ok=True)
    train, valid = read_split("train"), read_split("valid")
    # dvcyaml=None and save_dvc_exp=False: dvc.yaml declares the plots, and `dvc exp` is the user's choice
    with Live(dir=str(paths.DVCLIVE_DIR), save_dvc_exp=False, dvcyaml=None) as live:

        def log(record: dict[str, float]) -> None:
            for name, value in record.items():
                if name != "epoch":
                    live.log_metric(name, value)
            live.next_step()

        result = train_model(
            train, valid, params.data, params.model, params.train,
            checkpoint=paths.CHECKPOINT, on_epoch=log, params=params.model_dump(mode="json"),
        )  # fmt: skip
    paths.MODEL_DIR.mkdir(parents=True, exist_ok=True)
    result.model.save(paths.MODEL)
    io.write_json(result.metrics, paths.TRAIN_METRICS)
    valid = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics["valid"].items())
    print(
        f"train: best epoch {result.metrics['best_epoch']} of {result.metrics['epochs_run']} "
        f"in {result.metrics['seconds']:.0f} s on {result.metrics['device']}; valid {valid}"
    )
