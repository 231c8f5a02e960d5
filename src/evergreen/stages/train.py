"""Stage `train`: `data/split/{train,valid}` into `models/model.pt`, `metrics/train.json`, DVCLive curves, and
with `train.tensorboard` the same curves as TensorBoard event files in `tensorboard/<model.type>/`."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dvclive import Live
from evergreen.data import io
from evergreen.data.split import read_split
from evergreen.errors import ConfigError
from evergreen.model.train import train_model
from evergreen.workspace import Workspace

# the curves' names in TensorBoard, grouped into its panels: losses together, then the valid metrics
_TENSORBOARD_TAGS = {"train_loss": "loss/train", "valid_loss": "loss/valid", "lr": "lr"}


def tensorboard_writer(folder: Path) -> Any:
    """A fresh `SummaryWriter` on `folder` (a rerun replaces its curves); a clear error without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's module imports the `tensorboard` package, an optional extra
        raise ConfigError(
            "train.tensorboard is true, but the `tensorboard` package is not installed: "
            "pip install 'evergreen-ml[tensorboard]', or set train.tensorboard: false"
        ) from exc
    shutil.rmtree(folder, ignore_errors=True)
    return SummaryWriter(log_dir=str(folder))


def run(ws: Workspace) -> None:
    params = ws.params
    # the outs are `persist` in dvc.yaml so that an invalid params.yaml never costs the model: DVC leaves them,
    # and they are removed here, with the config known to be valid, so a failed run leaves no stale model
    ws.model.unlink(missing_ok=True)
    ws.train_metrics.unlink(missing_ok=True)
    train, valid = read_split(ws, "train"), read_split(ws, "valid")
    with ExitStack() as stack:
        # dvcyaml=None and save_dvc_exp=False: dvc.yaml declares the plots, and `dvc exp` is the user's choice
        live = stack.enter_context(Live(dir=str(ws.dvclive), save_dvc_exp=False, dvcyaml=None))
        writer = None
        if params.train.tensorboard:
            # one run per family, so `tensorboard --logdir tensorboard` shows the families side by side; the
            # folder is a local view of the curves (git-ignored), not a pipeline output: dvclive/ is that
            writer = stack.enter_context(tensorboard_writer(ws.tensorboard / params.model.type))

        def log(record: dict[str, float]) -> None:
            for name, value in record.items():
                if name != "epoch":
                    live.log_metric(name, value)
                    if writer is not None:
                        tag = _TENSORBOARD_TAGS.get(name, name.replace("valid_", "valid/", 1))
                        writer.add_scalar(tag, value, global_step=int(record["epoch"]))
            live.next_step()

        result = train_model(
            train, valid, params.data, params.model, params.train,
            checkpoint=ws.checkpoint, on_epoch=log, params=params.model_dump(mode="json"),
        )  # fmt: skip
    ws.models_dir.mkdir(parents=True, exist_ok=True)
    result.model.save(ws.model)
    io.write_json(result.metrics, ws.train_metrics)
    valid = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics["valid"].items())
    print(
        f"train: {result.metrics['model_type']}, best epoch {result.metrics['best_epoch']} of "
        f"{result.metrics['epochs_run']} in {result.metrics['seconds']:.0f} s on {result.metrics['device']}; "
        f"valid {valid}"
    )
