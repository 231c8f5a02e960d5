"""Stage `train`: `data/split/{train,valid}` into `models/model.pt`, `metrics/train.json`, DVCLive curves, and
with `train.tensorboard` the same curves as TensorBoard event files in `tensorboard/<model.type>/`.

With `train.distributed` the stage relaunches itself through torchrun and each process it starts runs this same
function as one rank: rank 0 alone writes the outputs. With `train.init: champion` it starts from the weights the
registry's champion was promoted with (its `model.pt`; the registry is not a DVC dependency of this stage, so a
new champion alone does not make DVC rerun it: new data does).

With `model.type: auto` it trains the candidates of `evergreen.model.auto` (LightGBM, the linear model, the deep
families, their blend) within `train.time_budget_s` and writes the one best on valid as `models/model.pt`. Either way
`models/candidates/index.json` lists each candidate (its valid metric, fit seconds, and file: the chosen one is
`models/model.pt`, the others are kept beside the index so that `evaluate` scores them all on test)."""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from dvclive import Live
from evergreen.data import io
from evergreen.data.parquet_rows import ParquetRows, sample_rows
from evergreen.data.split import read_split, split_pieces
from evergreen.errors import ConfigError
from evergreen.model import auto, distributed
from evergreen.model.candidates import NetworkCandidate, load_candidate, network_of, save_candidate, with_decision
from evergreen.model.metrics import metric as metric_of
from evergreen.model.preprocess import encode_target
from evergreen.model.threads import configure_threads
from evergreen.model.train import WarmStart, train_model
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

MODEL_FILE = "model.pt"  # in each registry version: the torch model a warm start begins from

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


def champion_start(ws: Workspace) -> WarmStart | None:
    """The champion's torch model, for `train.init: champion`; None (said why) when there is none to start from."""
    registry = Registry(ws.registry)
    champion = registry.champion()
    if champion is None:
        print("train.init is champion, but the registry has no champion yet: training from scratch")
        return None
    path = registry.path(champion) / MODEL_FILE
    if not path.exists():  # registered before versions kept their torch model
        print(f"train.init is champion, but champion {champion} has no {MODEL_FILE}: training from scratch")
        return None
    net = network_of(load_candidate(path))  # an ensemble's network part; trees have no weights to start from
    if net is None:
        print(f"train.init is champion, but champion {champion} is not a network: training from scratch")
        return None
    return WarmStart(champion, net)


def run(ws: Workspace) -> None:
    cfg = ws.params.train.distributed
    if cfg is not None and ws.params.model.type == "auto":
        raise ConfigError(
            "model.type auto trains its candidates in one process: set train.distributed: null, or name one "
            "family in model.type (e.g. mlp) to train it data-parallel"
        )
    if cfg is not None and not distributed.launched():
        # this process only launches: torchrun starts the ranks, each of them runs this stage again
        distributed.launch(cfg, ws.root, ["evergreen.cli", "stage", "train"])
        return
    # once, before any torch work: the CPU allowance shared out between this node's processes
    configure_threads(ws.params.train.threads, cfg.nproc_per_node if cfg is not None else 1)
    with distributed.process_group(cfg) as group, distributed.recording_errors(group.rank):
        _train(ws, group)


def _train(ws: Workspace, group: distributed.Group) -> None:
    params = ws.params
    # the outs are `persist` in dvc.yaml so that an invalid params.yaml never costs the model: DVC leaves them,
    # and they are removed here, with the config known to be valid, so a failed run leaves no stale model
    if group.leader:
        ws.model.unlink(missing_ok=True)
        ws.train_metrics.unlink(missing_ok=True)
        shutil.rmtree(ws.candidates, ignore_errors=True)
    train, valid = _splits(ws)
    warm = champion_start(ws) if params.train.init == "champion" else None
    if isinstance(train, pl.DataFrame) and params.model.type == "auto":
        _train_auto(ws, train, valid, warm)
        return
    if not group.leader:
        # the other ranks train their shards and write nothing: no curves, no model
        train_model(train, valid, params.data, params.model, params.train, checkpoint=ws.checkpoint,
                    params=params.model_dump(mode="json"), progress=False, warm=warm, group=group)  # fmt: skip
        return
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
            checkpoint=ws.checkpoint, on_epoch=log, params=params.model_dump(mode="json"), warm=warm,
            group=group,
        )  # fmt: skip
    ws.models_dir.mkdir(parents=True, exist_ok=True)
    metric = params.promote.metric_for(params.data.task)
    prep = result.model.prep
    if prep.task == "classification":  # its decision fitted on valid, as `model.type: auto` does for each
        with_decision(NetworkCandidate(result.model), metric, prep.matrix(valid), encode_target(valid, prep))
    result.model.save(ws.model)
    entry = {"family": params.model.type, "valid": result.metrics["valid"].get(metric),
             "seconds": result.metrics["seconds"], "file": ws.model.name, "chosen": True}  # fmt: skip
    _write_index(ws, metric, [entry])
    io.write_json(result.metrics, ws.train_metrics)
    valid = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics["valid"].items())
    print(
        f"train: {result.metrics['model_type']}, best epoch {result.metrics['best_epoch']} of "
        f"{result.metrics['epochs_run']} in {result.metrics['seconds']:.0f} s on {result.metrics['device']}; "
        f"valid {valid}"
    )


def _splits(ws: Workspace) -> tuple[pl.DataFrame | ParquetRows, pl.DataFrame]:
    """The train split and the valid rows: in memory, or, from `train.stream.from_rows` train rows, the train
    split's Parquet files to stream and a seeded sample of valid (`evergreen.model.stream`)."""
    stream, seed = ws.params.train.stream, ws.params.train.seed
    train = ParquetRows.of(split_pieces(ws, "train"))
    streamed = train.total >= stream.from_rows
    if streamed and ws.params.model.type == "auto":
        # LightGBM and the linear model fit in memory: auto takes the whole split, as below the threshold
        print(f"train: model.type auto loads the {train.total} train rows whole; a network family (e.g. "
              f"model.type: mlp) streams them from train.stream.from_rows ({stream.from_rows}) on")  # fmt: skip
    if not streamed or ws.params.model.type == "auto":
        return pl.read_parquet(list(train.pieces)), read_split(ws, "valid")
    valid = sample_rows(ParquetRows.of(split_pieces(ws, "valid")), stream.sample_rows, seed)
    print(f"train: streaming {train.total} train rows from {len(train.pieces)} file(s); early stopping on "
          f"{valid.height} valid rows")  # fmt: skip
    return train, valid


def _write_index(ws: Workspace, metric: str, entries: list[dict[str, Any]]) -> None:
    """`models/candidates/index.json`: every candidate, best on valid first (`evaluate` adds their test metric)."""
    ws.candidates.mkdir(parents=True, exist_ok=True)
    io.write_json({"metric": metric, "candidates": entries}, ws.candidates / "index.json")


def _rank(metric: str, value: float | None) -> tuple[bool, float]:
    """A sort key: defined values first, best first in the metric's direction."""
    if value is None:
        return True, 0.0
    return False, value if metric_of(metric).lower_is_better else -value


def _train_auto(ws: Workspace, train: Any, valid: Any, warm: WarmStart | None) -> None:
    """`model.type: auto`: every candidate within the time budget; the best on valid is the stage's model."""
    params = ws.params
    metric = params.promote.metric_for(params.data.task)
    with Live(dir=str(ws.dvclive), save_dvc_exp=False, dvcyaml=None) as live:

        def log(family: str, record: dict[str, float]) -> None:
            for name, value in record.items():
                if name != "epoch":
                    live.log_metric(f"{family}/{name}", value)  # one curve per family and metric
            live.next_step()

        # the budget counts from the process's start: imports and reading the split are the stage's time too
        spent = time.time() - psutil.Process().create_time()
        entries = auto.train_candidates(
            train, valid, params.data, params.model, params.train, metric,
            checkpoint=ws.checkpoint, on_epoch=log, params=params.model_dump(mode="json"), warm=warm,
            spent_s=spent,
        )  # fmt: skip
    chosen = auto.choose(entries, metric)
    # best on valid first (the chosen one), undefined metrics last
    ranked = sorted(entries, key=lambda e: (e is not chosen, *_rank(metric, e.valid)))
    ws.models_dir.mkdir(parents=True, exist_ok=True)
    ws.candidates.mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in ranked:
        if entry is chosen:
            save_candidate(entry.candidate, ws.model)
            file = ws.model.name
        else:
            file = f"{ws.candidates.name}/{entry.family}.pt"
            save_candidate(entry.candidate, ws.models_dir / file)
        rows.append({"family": entry.family, "valid": entry.valid, "seconds": entry.seconds, "file": file,
                     "chosen": entry is chosen, **entry.detail})  # fmt: skip
    _write_index(ws, metric, rows)
    info = getattr(chosen.candidate, "info", {})
    metrics = {
        **(info if "model_type" in info else {}),  # a network's own training record, as `model.type: mlp` writes
        "model_type": chosen.family,
        "valid": auto.valid_scores(chosen, valid),
        "n_train": train.height,
        "n_valid": valid.height,
        "seconds": round(sum(e.seconds for e in entries if e.family != "ensemble"), 2),
        "candidates": rows,
    }
    io.write_json(metrics, ws.train_metrics)
    board = ", ".join(f"{r['family']} {r['valid']:.4g}" if r["valid"] is not None else r["family"] for r in rows)
    print(f"train: model.type auto chose {chosen.family} on valid {metric} ({board})")
