"""The training loop, top to bottom: data to tensors, model, optimiser, epochs, early stopping, checkpoint.

Determinism: one seed drives initialisation, dropout and the batch order, and every RNG state goes into the
checkpoint, so a run that is killed and rerun ends with the same metrics as one that was never interrupted.
A checkpoint written for other params or other data (its fingerprint differs) is ignored, and so is one of a
finished run (all epochs done, or stopped early): rerunning a finished run (`dvc repro -f`) trains it again.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch.nn import functional as F
from tqdm import tqdm

from evergreen.config import DataConfig, ModelConfig, TrainConfig
from evergreen.errors import ModelError, TrainingDiverged
from evergreen.model.distributed import SINGLE, Group
from evergreen.model.metrics import score
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import (
    Preprocessing,
    check_frame,
    encode_target,
    fingerprint,
    fit_preprocessing,
    warm_preprocessing,
)


@dataclass
class TrainResult:
    """The best model (by the valid split), the per-epoch history and the summary for metrics/train.json."""

    model: TabularNet
    history: list[dict[str, float]]
    metrics: dict[str, Any]


def resolve_device(setting: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # each of the two phases needs more than one step: a few batches in all (a small table, few epochs)
        # would otherwise divide by zero inside OneCycleLR, so warm-up gets at least 1.5 steps
        pct_start = min(max(cfg.warmup, 1.5 / total_steps), 1 - 1.5 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct_start
        )
    warmup = max(1, int(cfg.warmup * total_steps))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine if cfg.schedule == "cosine" else lambda _: 1.0)


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The temperature T that minimises the valid NLL of mean_k softmax(logits_k / T): LBFGS on log T.

    `logits` [K, N, C] are the members' outputs, `target` [N] the class indices. One scalar for every class
    and member keeps the argmax of a single model (accuracy) as it was. T stays 1 unless the NLL improves,
    and when the optimum falls below 0.05: a valid split the model separates perfectly drives T towards 0,
    which says nothing about the rows it does not separate (on breast-cancer such a T made the test log
    loss 0.73 instead of 0.04). T is at most 20 (a model barely better than the prior).
    """
    logits, target = logits.detach().double().cpu(), target.cpu()
    if (torch.softmax(logits, dim=-1).mean(dim=0).argmax(dim=-1) == target).all():
        return 1.0  # separated perfectly: the optimum is T -> 0 (LBFGS stops wherever the gradient fades)

    def nll(log_t: torch.Tensor) -> torch.Tensor:
        log_p = torch.logsumexp(torch.log_softmax(logits / log_t.exp(), dim=-1), dim=0) - math.log(len(logits))
        return F.nll_loss(log_p, target)

    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(log_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        if not log_t > math.log(0.05):  # also when LBFGS ended on NaN
            return 1.0
        fitted = log_t.clamp(max=math.log(20.0))
        if not nll(fitted) < nll(torch.zeros((), dtype=torch.float64)):
            return 1.0
        return float(fitted.exp())


def _quiet(*_: Any, **__: Any) -> None:
    """`print` on ranks other than 0: one process speaks for a data-parallel run."""


def _read_checkpoint(checkpoint: Path | None) -> dict[str, Any]:
    """The saved training state, or {} when there is none or it cannot be used (said, not raised)."""
    if checkpoint is None or not checkpoint.exists():
        return {}
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign: torch raises many kinds; start afresh, don't fail
        print(f"ignoring {checkpoint}: it cannot be read ({exc})")
        return {}
    if not isinstance(saved, dict):
        print(f"ignoring {checkpoint}: it is not a training checkpoint")
        return {}
    return saved


@dataclass(frozen=True)
class WarmStart:
    """What a warm start (`train.init: champion`) begins from: the champion's network and its version."""

    version: str
    model: TabularNet


def _initial_model(
    fitted: Preprocessing, warm: WarmStart | None, model_cfg: ModelConfig, params: dict[str, Any] | None, seed: int
) -> tuple[Preprocessing, TabularNet, dict[str, Any]]:
    """The preprocessing, the network to start from and how it was initialised (for metrics/train.json).

    A warm start keeps the champion's preprocessing while the schema is unchanged, so that its weights see
    inputs on the scale they learnt; otherwise the preprocessing `fitted` on the new train split is used and
    the record says what changed. Parameters are copied where name and shape match; a champion that shares
    less than half of the weights (another family, other widths) gives a scratch start, with the reason.
    """
    torch.manual_seed(seed)
    if warm is None:
        return fitted, TabularNet(fitted, model_cfg, params), {"from": "scratch"}
    prep, preprocessing = warm_preprocessing(warm.model.prep, fitted)
    model = TabularNet(prep, model_cfg, params)
    copied, new = model.load_matching(warm.model)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    share = sum(sizes[name] for name in copied) / sum(sizes.values())
    if share < 0.5:
        # mostly new weights (another family or other widths): a short fine-tuning schedule would undertrain
        torch.manual_seed(seed)
        why = f"champion {warm.version} shares {share:.0%} of the weights of this architecture ({model_cfg.type})"
        return fitted, TabularNet(fitted, model_cfg, params), {"from": "scratch", "reason": why}
    init = {
        "from": "champion",
        "version": warm.version,
        "preprocessing": preprocessing,
        "parameters_copied": len(copied),
        "parameters_new": ", ".join(new),  # a string: `dvc metrics show` lists scalars
        "weights_copied": round(share, 4),
    }
    return prep, model, init


def train_model(
    train_frame: pl.DataFrame,
    valid_frame: pl.DataFrame,
    data: DataConfig,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    *,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    params: dict[str, Any] | None = None,
    progress: bool = True,
    warm: WarmStart | None = None,
    group: Group = SINGLE,
) -> TrainResult:
    """Train on `train_frame`, stop early on `valid_frame`, return the best model.

    `checkpoint` is written after every epoch and resumed from when its fingerprint matches; `on_epoch`
    receives each epoch's record (replayed for epochs restored from a checkpoint, so loggers see them all).
    `progress` shows a per-step bar on a terminal; when stderr is not one (DVC's output captured into
    Prefect logs) it prints one plain line per epoch instead, as a bar's carriage returns would flood logs.
    `warm` starts from a champion's weights and fine-tunes (`train.warm_epochs` at `lr * warm_lr_factor`);
    `group` is this process's place in a data-parallel run (`evergreen.model.distributed`): each rank trains
    on its shard of every batch, rank 0 evaluates and decides, and only rank 0 writes the checkpoint.
    """
    started = time.perf_counter()
    say = print if group.leader else _quiet
    prep, model, init = _initial_model(fit_preprocessing(train_frame, data, model_cfg), warm, model_cfg, params,
                                       cfg.seed)  # fmt: skip
    if init["from"] == "champion":
        # fine-tuning: fewer epochs at a lower peak rate are what make a warm retrain cheaper
        cfg = cfg.model_copy(update={"epochs": cfg.warm_epochs, "lr": cfg.lr * cfg.warm_lr_factor})
        say(f"warm start from champion {init['version']}: {init['parameters_copied']} parameter tensors copied, "
            f"preprocessing {init['preprocessing']}; {cfg.epochs} epochs at lr {cfg.lr:.3g}")  # fmt: skip
    elif "reason" in init:
        say(f"train.init is champion, training from scratch: {init['reason']}")
    check_frame(valid_frame, [*prep.input_columns, data.target.name], "valid")
    x_train = torch.from_numpy(prep.matrix(train_frame))
    y_train = torch.from_numpy(encode_target(train_frame, prep))
    x_valid = torch.from_numpy(prep.matrix(valid_frame))
    y_valid = torch.from_numpy(encode_target(valid_frame, prep))
    # valid metrics are in target units (regression) or over class indices (classification)
    if prep.task == "regression":
        valid_actual = valid_frame[data.target.name].cast(pl.Float64).to_numpy()
    else:
        valid_actual = y_valid.numpy()
    key = fingerprint(
        model_cfg.model_dump(), cfg.model_dump(exclude={"device"}), prep.to_dict(), init,
        x_train.numpy(), y_train.numpy(), x_valid.numpy(), y_valid.numpy(),
    )  # fmt: skip

    # ---- model, optimiser, schedule (the model was built from the seed above: initialisation, or the champion)
    device = group.device(resolve_device(cfg.device))
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = model.to(device)
    x_train, y_train, x_valid, y_valid = (t.to(device) for t in (x_train, y_train, x_valid, y_valid))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, n_members = len(x_train), model_cfg.ensemble
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    scheduler = _scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)  # batch order, separate from init and dropout
    class_weight = None
    if prep.task == "classification" and cfg.class_weight == "balanced":
        counts = torch.bincount(y_train, minlength=len(prep.classes)).float()
        class_weight = (n / (len(prep.classes) * counts.clamp(min=1))).to(device)

    def loss_of(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # outputs [K, N, out]: each member is fitted to the target on its own, the loss is their mean
        outputs = outputs.float()
        if prep.task == "regression":
            return F.mse_loss(outputs[..., 0], target.expand(n_members, -1))
        flat = outputs.reshape(-1, outputs.shape[-1])
        return F.cross_entropy(flat, target.repeat(n_members), weight=class_weight)

    autocast = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": device.type == "cuda"}
    epoch, best_epoch, bad_epochs, best_score = 0, 0, 0, math.inf
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, float]] = []

    # ---- resume: rank 0 reads the checkpoint and hands it to the others (they may be on nodes without it)
    saved = group.from_leader(_read_checkpoint(checkpoint) if group.leader else None)
    ours = saved.get("fingerprint") == key
    if ours and (saved["epoch"] >= cfg.epochs or saved["bad_epochs"] >= cfg.patience):
        # a finished run is only rerun on purpose (`dvc repro -f`, or its outputs were lost): train it again
        how = "stopped early" if saved["epoch"] < cfg.epochs else "ran all epochs"
        say(f"{checkpoint} is a finished run ({how}, epoch {saved['epoch']}): training from scratch")
    elif ours:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        # each rank's own dropout stream (their shards, so their draws, can differ by a row)
        rngs = saved.get("rngs", [])
        torch.set_rng_state(rngs[group.rank] if len(rngs) == group.world else saved["rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        generator.set_state(saved["generator"])
        epoch, best_epoch, bad_epochs = saved["epoch"], saved["best_epoch"], saved["bad_epochs"]
        best_score, best_state, history = saved["best_score"], saved["best_state"], saved["history"]
        say(f"resuming from {checkpoint} after epoch {epoch}")
        for record in history:
            if on_epoch is not None:
                on_epoch(record)
    elif saved:
        say(f"ignoring {checkpoint}: it was written for other params or data")

    # ---- epochs
    forward = group.wrap(model, model.member_outputs)  # DDP around it in a data-parallel run
    bar = progress and group.leader and sys.stderr.isatty()
    while epoch < cfg.epochs and bad_epochs < cfg.patience:
        epoch += 1
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        batches = tqdm(range(0, n, cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", disable=not bar)
        for start in batches:
            # this rank's share of the global batch (all of it in one process), and its loss's weight
            index, rows, weight = group.shard(order[start : start + cfg.batch_size])
            with torch.autocast(**autocast):
                loss = loss_of(forward(x_train[index]), y_train[index])
            if not torch.isfinite(loss):
                # on one rank of several, torchrun stops the others when this one exits
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}: the loss became {loss.item()} "
                    "(lower train.lr, or look for infinite values in the data); no model was written"
                )
            optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total += loss.item() * rows
            batches.set_postfix(loss=f"{loss.item():.4f}")
        total = group.sum(total)

        # ---- evaluate on valid (rank 0): the loss, and the task's metrics in target units
        record: dict[str, float] | None = None
        if group.leader:
            model.eval()
            with torch.no_grad(), torch.autocast(**autocast):
                valid_loss = loss_of(model.member_outputs(x_valid), y_valid).item()
                valid_output = model(x_valid).float().cpu().numpy()
            valid_metrics = score(prep.task, valid_actual, valid_output, prep.classes)
            record = {"epoch": epoch, "train_loss": total / n, "valid_loss": valid_loss,
                      "lr": scheduler.get_last_lr()[0]}  # fmt: skip
            record |= {f"valid_{k}": v for k, v in valid_metrics.items() if v is not None}
        # every rank decides from rank 0's numbers: they all stop at the same epoch, and keep the same best
        record = group.from_leader(record)
        history.append(record)
        # regression stops on valid RMSE in target units (what evaluation reports); classification on loss
        current = record["valid_rmse"] if prep.task == "regression" else record["valid_loss"]
        if not math.isfinite(current):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the valid split's score became {current} "
                "(look for infinite values in the valid split); no model was written"
            )
        if progress and not bar and group.leader:
            valid = f"rmse {current:.4g}" if prep.task == "regression" else f"loss {current:.4f}"
            print(f"epoch {epoch}/{cfg.epochs}: train loss {total / n:.4f}, valid {valid}", flush=True)
        if current < best_score:
            best_score, best_epoch, bad_epochs = current, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        # every rank's RNG state goes to rank 0's checkpoint (a collective: all ranks take part)
        rngs = group.gather(torch.get_rng_state()) if checkpoint is not None else []
        if checkpoint is not None and group.leader:
            state = {
                "fingerprint": key, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(), "generator": generator.get_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_score": best_score,
                "best_state": best_state, "history": history,
                **({"rngs": rngs} if group.world > 1 else {}),
            }  # fmt: skip
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, checkpoint.with_suffix(".tmp"))
            os.replace(checkpoint.with_suffix(".tmp"), checkpoint)  # a kill mid-write leaves the old one
        if on_epoch is not None:
            on_epoch(record)

    # ---- the best epoch's weights are the model
    model.load_state_dict(best_state)
    model.eval()
    best = history[best_epoch - 1]
    valid_scores = {k.removeprefix("valid_"): v for k, v in best.items() if k.startswith("valid_")}
    calibration = None
    if prep.task == "classification":
        # ---- temperature scaling on the valid split: the valid scores become those of the calibrated model
        with torch.no_grad(), torch.autocast(**autocast):
            logits = model.member_outputs(x_valid).float()
        temperature = fit_temperature(logits, y_valid)
        model.temperature.fill_(temperature)
        probabilities = torch.softmax(logits.double() / temperature, dim=-1).mean(dim=0).cpu().numpy()
        scores = score(prep.task, valid_actual, probabilities, prep.classes)
        calibration = {"temperature": temperature, "valid_log_loss_before": valid_scores["log_loss"],
                       "valid_log_loss_after": scores["log_loss"]}  # fmt: skip
        valid_scores |= {k: v for k, v in scores.items() if v is not None}
        if progress:
            say(f"temperature {temperature:.4g}: valid log loss {calibration['valid_log_loss_before']:.4f} "
                f"-> {calibration['valid_log_loss_after']:.4f}", flush=True)  # fmt: skip
    metrics = {
        "model_type": model_cfg.type,
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "stopped_early": epoch < cfg.epochs,
        "train_loss": best["train_loss"],
        "valid": valid_scores,
        **({"calibration": calibration} if calibration is not None else {}),
        "n_train": n,
        "n_valid": len(x_valid),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "processes": group.world,
        "init": init,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TrainResult(model=model.cpu(), history=history, metrics=metrics)
