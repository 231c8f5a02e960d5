"""Stage `train`: `data/split/{train,valid}` into `models/model.pt`, `metrics/train.json`, DVCLive curves."""

from __future__ import annotations

from dvclive import Live
from evergreen.data import io
from evergreen.data.split import read_split
from evergreen.model.train import train_model
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    params = ws.params
    # the outs are `persist` in dvc.yaml so that an invalid params.yaml never costs the model: DVC leaves them,
    # and they are removed here, with the config known to be valid, so a failed run leaves no stale model
    ws.model.unlink(missing_ok=True)
    ws.train_metrics.unlink(missing_ok=True)
    train, valid = read_split(ws, "train"), read_split(ws, "valid")
    # dvcyaml=None and save_dvc_exp=False: dvc.yaml declares the plots, and `dvc exp` is the user's choice
    with Live(dir=str(ws.dvclive), save_dvc_exp=False, dvcyaml=None) as live:

        def log(record: dict[str, float]) -> None:
            for name, value in record.items():
                if name != "epoch":
                    live.log_metric(name, value)
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
        f"train: best epoch {result.metrics['best_epoch']} of {result.metrics['epochs_run']} "
        f"in {result.metrics['seconds']:.0f} s on {result.metrics['device']}; valid {valid}"
    )
