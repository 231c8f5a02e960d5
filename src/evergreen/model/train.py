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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch.nn import functional as F
from tqdm import tqdm

from evergreen.config import DataConfig, ModelConfig, TrainConfig
from evergreen.data.parquet_rows import ParquetRows, sample_rows
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
from evergreen.model.stream import StreamedRows, tensor

VALID_CHUNK_ROWS = 65_536  # valid rows scored at once: a long valid split's activations are never all in memory


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


def batch_size_for(setting: int | str, n_rows: int) -> int:
    """`train.batch_size`: a number as it is; `auto` grows with the train rows, the power of two at or below
    rows / 40, between 256 and 4096 (256 up to 20k rows, 1024 from 41k, 4096 from 164k): fewer, larger steps
    cost less per row on a large table, while a small one keeps enough steps per epoch to learn from."""
    if setting != "auto":
        return int(setting)
    return int(min(4096, max(256, 2 ** math.floor(math.log2(max(n_rows, 1) / 40)))))


@dataclass(frozen=True)
class InMemoryRows:
    """The train split loaded whole, as tensors on the training device."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.x)

    def steps(self, batch_size: int, world: int) -> int:
        del world  # the global batch is sharded between the ranks
        return math.ceil(self.n / batch_size)

    def batches(
        self, generator: torch.Generator, batch_size: int, group: Group
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, float]]:
        """An epoch in a fresh order: (x, y, this rank's own rows, its loss's weight) per global batch."""
        order = torch.randperm(self.n, generator=generator).to(self.x.device)
        for start in range(0, self.n, batch_size):
            index, rows, weight = group.shard(order[start : start + batch_size])
            yield self.x[index], self.y[index], rows, weight


@dataclass
class _Setup:
    """What the epochs work with: data on the device, the model, its optimiser, schedule and loss."""

    prep: Preprocessing
    model: TabularNet
    init: dict[str, Any]
    cfg: TrainConfig  # with a warm start's epochs and rate, and the batch size resolved
    rows: InMemoryRows | StreamedRows  # the train split, as each epoch reads it
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    valid_actual: Any  # valid targets in target units (regression) or class indices (classification)
    key: str  # the fingerprint a checkpoint must carry to be resumed
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator  # batch order, separate from initialisation and dropout
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    autocast: dict[str, Any]


@dataclass
class _Progress:
    """The loop's state, all of which a checkpoint keeps."""

    epoch: int = 0
    best_epoch: int = 0
    bad_epochs: int = 0
    best_score: float = math.inf
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _loss_function(prep: Preprocessing, counts: torch.Tensor | None, device: torch.device) -> Callable:
    """The training loss over members' outputs [K, N, out]: each member is fitted to the target on its own and
    the loss is the mean of theirs (for tabm, each of its k members counts as one), never the loss of the mean.
    `counts`, the train rows per class, weighs the classes (`train.class_weight: balanced`)."""
    class_weight = None
    if counts is not None:
        class_weight = (counts.sum() / (len(prep.classes) * counts.clamp(min=1))).to(device)

    def loss_of(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        outputs, members = outputs.float(), outputs.shape[0]
        if prep.task == "regression":
            return F.mse_loss(outputs[..., 0], target.expand(members, -1))
        flat = outputs.reshape(-1, outputs.shape[-1])
        return F.cross_entropy(flat, target.repeat(members), weight=class_weight)

    return loss_of


def _train_rows(
    train: pl.DataFrame | ParquetRows, prep: Preprocessing, target: str, cfg: TrainConfig, sample: pl.DataFrame | None
) -> tuple[InMemoryRows | StreamedRows, torch.Tensor, list[Any], torch.Tensor | None]:
    """The train split as the epochs read it, the inputs a family fits before training (tabm's bins), what a
    checkpoint's fingerprint holds of the data, and the rows per class for `class_weight: balanced`."""
    balanced = prep.task == "classification" and cfg.class_weight == "balanced"
    if isinstance(train, pl.DataFrame):
        x, y = tensor(prep.matrix(train)), tensor(encode_target(train, prep))
        counts = torch.bincount(y, minlength=len(prep.classes)).float() if balanced else None
        return InMemoryRows(x, y), x, [x.numpy(), y.numpy()], counts
    columns = list(dict.fromkeys([*prep.input_columns, target]))
    rows = StreamedRows(train, columns, lambda f: (prep.matrix(f), encode_target(f, prep)), cfg.stream.shuffle_rows)
    assert sample is not None  # drawn by `_prepare` for every streamed split
    counts = torch.from_numpy(rows.class_counts(target, prep.classes)).float() if balanced else None
    return rows, tensor(prep.matrix(sample)), [train.content_key()], counts


def _prepare(
    train: pl.DataFrame | ParquetRows, valid_frame: pl.DataFrame, data: DataConfig, model_cfg: ModelConfig,
    cfg: TrainConfig, params: dict[str, Any] | None, warm: WarmStart | None, group: Group, say: Callable,
) -> _Setup:  # fmt: skip
    """Preprocessing fitted on train, the model (from the seed, or the champion), tensors, optimiser, schedule.

    A streamed train split (`ParquetRows`) is fitted in a streaming pass, its medians and tabm's bins on a
    seeded sample of `train.stream.sample_rows` rows."""
    streamed = isinstance(train, ParquetRows)
    sample = sample_rows(train, cfg.stream.sample_rows, cfg.seed) if streamed else None
    fitted = fit_preprocessing(train, data, model_cfg, sample)
    prep, model, init = _initial_model(fitted, warm, model_cfg, params, cfg.seed)
    if init["from"] == "champion":
        # fine-tuning: fewer epochs at a lower peak rate are what make a warm retrain cheaper
        cfg = cfg.model_copy(update={"epochs": cfg.warm_epochs, "lr": cfg.lr * cfg.warm_lr_factor})
        say(f"warm start from champion {init['version']}: {init['parameters_copied']} parameter tensors copied, "
            f"preprocessing {init['preprocessing']}; {cfg.epochs} epochs at lr {cfg.lr:.3g}")  # fmt: skip
    elif "reason" in init:
        say(f"train.init is champion, training from scratch: {init['reason']}")
    check_frame(valid_frame, [*prep.input_columns, data.target.name], "valid")
    rows, fit_inputs, data_key, counts = _train_rows(train, prep, data.target.name, cfg, sample)
    model.fit_to_train(fit_inputs)  # what a family learns from the train inputs before training (tabm's bins)
    del sample, fit_inputs
    x_valid, y_valid = tensor(prep.matrix(valid_frame)), tensor(encode_target(valid_frame, prep))
    # valid metrics are in target units (regression) or over class indices (classification)
    if prep.task == "regression":
        valid_actual = valid_frame[data.target.name].cast(pl.Float64).to_numpy()
    else:
        valid_actual = y_valid.numpy()
    cfg = cfg.model_copy(update={"batch_size": batch_size_for(cfg.batch_size, rows.n)})
    # how the rows are read changes nothing in memory; streamed, the shuffle buffer and the sample decide the
    # batches and the medians, so a checkpoint resumes only under the same `train.stream`
    unread = {"device", "threads", "time_budget_s"} | (set() if streamed else {"stream"})
    key = fingerprint(
        model_cfg.model_dump(), cfg.model_dump(exclude=unread),
        prep.to_dict(), init, *data_key, x_valid.numpy(), y_valid.numpy(),
    )  # fmt: skip
    device = group.device(resolve_device(cfg.device))
    if device.type == "cuda":
        # CPU kernels are deterministic already; on CPU the call only costs seconds (it imports torch._dynamo)
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = model.to(device)
    if isinstance(rows, InMemoryRows):
        rows = InMemoryRows(rows.x.to(device), rows.y.to(device))
    x_valid, y_valid = x_valid.to(device), y_valid.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg, cfg.epochs * rows.steps(cfg.batch_size, group.world))
    return _Setup(
        prep, model, init, cfg, rows, x_valid, y_valid, valid_actual, key, device, optimizer,
        scheduler, torch.Generator().manual_seed(cfg.seed), _loss_function(prep, counts, device),
        {"device_type": device.type, "dtype": torch.bfloat16, "enabled": device.type == "cuda"},
    )  # fmt: skip


def _resume(setup: _Setup, checkpoint: Path | None, group: Group, say: Callable) -> _Progress:
    """The state of the checkpoint when it is this run's and unfinished, else a fresh start (said why).

    Rank 0 reads the checkpoint and hands it to the others (they may be on nodes without it).
    """
    saved = group.from_leader(_read_checkpoint(checkpoint) if group.leader else None)
    cfg = setup.cfg
    if saved.get("fingerprint") != setup.key:
        if saved:
            say(f"ignoring {checkpoint}: it was written for other params or data")
        return _Progress()
    if saved["epoch"] >= cfg.epochs or saved["bad_epochs"] >= cfg.patience:
        # a finished run is only rerun on purpose (`dvc repro -f`, or its outputs were lost): train it again
        how = "stopped early" if saved["epoch"] < cfg.epochs else "ran all epochs"
        say(f"{checkpoint} is a finished run ({how}, epoch {saved['epoch']}): training from scratch")
        return _Progress()
    setup.model.load_state_dict(saved["model"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scheduler.load_state_dict(saved["scheduler"])
    # each rank's own dropout stream (their shards, so their draws, can differ by a row)
    rngs = saved.get("rngs", [])
    torch.set_rng_state(rngs[group.rank] if len(rngs) == group.world else saved["rng"])
    if setup.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"])
    setup.generator.set_state(saved["generator"])
    say(f"resuming from {checkpoint} after epoch {saved['epoch']}")
    return _Progress(saved["epoch"], saved["best_epoch"], saved["bad_epochs"], saved["best_score"],
                     saved["best_state"], saved["history"])  # fmt: skip


def _train_epoch(
    setup: _Setup, epoch: int, forward: Callable, group: Group, bar: bool, deadline: float | None = None
) -> float:
    """One pass over the train split in a fresh order; returns the summed loss over all ranks' rows.

    In one process, an epoch is cut short at `deadline` (after at least one batch): one epoch of a large
    network can outlast its whole share of `train.time_budget_s` (TabM, 59 s against a 49 s share, on 50k rows).
    Ranks of a data-parallel run always finish the epoch: stopping them together would cost a collective per
    batch."""
    cfg = setup.cfg
    setup.model.train()
    total = 0.0
    batches = tqdm(setup.rows.batches(setup.generator, cfg.batch_size, group),
                   total=setup.rows.steps(cfg.batch_size, group.world), desc=f"epoch {epoch}/{cfg.epochs}",
                   disable=not bar)  # fmt: skip
    for step, (x, y, rows, weight) in enumerate(batches):
        if deadline is not None and group.world == 1 and step > 0 and time.monotonic() > deadline:
            break
        with torch.autocast(**setup.autocast):
            loss = setup.loss_of(forward(x.to(setup.device)), y.to(setup.device))
        if not torch.isfinite(loss):
            # on one rank of several, torchrun stops the others when this one exits
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the loss became {loss.item()} "
                "(lower train.lr, or look for infinite values in the data); no model was written"
            )
        setup.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(setup.model.parameters(), cfg.grad_clip)
        setup.optimizer.step()
        setup.scheduler.step()
        total += loss.item() * rows
        batches.set_postfix(loss=f"{loss.item():.4f}")
    return group.sum(total)


def _in_chunks(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dim: int) -> torch.Tensor:
    """`forward(x)`, `VALID_CHUNK_ROWS` rows at a time, joined on the rows' dimension `dim`."""
    if len(x) <= VALID_CHUNK_ROWS:
        return forward(x)
    return torch.cat([forward(x[i : i + VALID_CHUNK_ROWS]) for i in range(0, len(x), VALID_CHUNK_ROWS)], dim=dim)


def _validate(setup: _Setup, epoch: int, total: float, group: Group) -> dict[str, float]:
    """The epoch's record: rank 0 evaluates the valid split (loss, and the task's metrics in target units) and
    every rank gets its numbers, so they all stop at the same epoch and keep the same best."""
    record: dict[str, float] | None = None
    if group.leader:
        setup.model.eval()
        with torch.no_grad(), torch.autocast(**setup.autocast):
            members = _in_chunks(setup.model.member_outputs, setup.x_valid, dim=1)
            valid_loss = setup.loss_of(members, setup.y_valid).item()
            valid_output = _in_chunks(setup.model, setup.x_valid, dim=0).float().cpu().numpy()
        valid_metrics = score(setup.prep.task, setup.valid_actual, valid_output, setup.prep.classes)
        record = {"epoch": epoch, "train_loss": total / setup.rows.n, "valid_loss": valid_loss,
                  "lr": setup.scheduler.get_last_lr()[0]}  # fmt: skip
        record |= {f"valid_{k}": v for k, v in valid_metrics.items() if v is not None}
    return group.from_leader(record)


def _keep_best(setup: _Setup, state: _Progress, record: dict[str, float]) -> float:
    """Note the epoch's score: the weights when it is the best so far, else one more epoch without progress."""
    # regression stops on valid RMSE in target units (what evaluation reports); classification on loss
    current = record["valid_rmse"] if setup.prep.task == "regression" else record["valid_loss"]
    if not math.isfinite(current):
        raise TrainingDiverged(
            f"training diverged at epoch {state.epoch}: the valid split's score became {current} "
            "(look for infinite values in the valid split); no model was written"
        )
    if current < state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = current, state.epoch, 0
        state.best_state = {k: v.detach().clone() for k, v in setup.model.state_dict().items()}
    else:
        state.bad_epochs += 1
    return current


def _save_checkpoint(setup: _Setup, state: _Progress, checkpoint: Path, group: Group) -> None:
    """Everything needed to go on after this epoch, written atomically by rank 0."""
    # every rank's RNG state goes to rank 0's checkpoint (a collective: all ranks take part)
    rngs = group.gather(torch.get_rng_state())
    if not group.leader:
        return
    saved = {
        "fingerprint": setup.key, "epoch": state.epoch, "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
        "rng": torch.get_rng_state(), "generator": setup.generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state() if setup.device.type == "cuda" else None,
        "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs, "best_score": state.best_score,
        "best_state": state.best_state, "history": state.history,
        **({"rngs": rngs} if group.world > 1 else {}),
    }  # fmt: skip
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, checkpoint.with_suffix(".tmp"))
    os.replace(checkpoint.with_suffix(".tmp"), checkpoint)  # a kill mid-write leaves the old one


def _out_of_time(deadline: float | None, epoch_started: float, group: Group) -> bool:
    """Whether another epoch as long as the last would end past the deadline (rank 0 decides for all)."""
    if deadline is None:
        return False
    now = time.monotonic()
    return bool(group.from_leader(now + (now - epoch_started) > deadline if group.leader else None))


def _calibrate(setup: _Setup, best: dict[str, float], progress: bool, say: Callable) -> tuple[dict, dict | None]:
    """The best epoch's valid scores; for classification, after temperature scaling fitted on valid."""
    valid_scores = {k.removeprefix("valid_"): v for k, v in best.items() if k.startswith("valid_")}
    if setup.prep.task != "classification":
        return valid_scores, None
    with torch.no_grad(), torch.autocast(**setup.autocast):
        logits = _in_chunks(setup.model.member_outputs, setup.x_valid, dim=1).float()
    temperature = fit_temperature(logits, setup.y_valid)
    setup.model.temperature.fill_(temperature)
    probabilities = torch.softmax(logits.double() / temperature, dim=-1).mean(dim=0).cpu().numpy()
    scores = score(setup.prep.task, setup.valid_actual, probabilities, setup.prep.classes)
    calibration = {"temperature": temperature, "valid_log_loss_before": valid_scores["log_loss"],
                   "valid_log_loss_after": scores["log_loss"]}  # fmt: skip
    valid_scores |= {k: v for k, v in scores.items() if v is not None}
    if progress:
        say(f"temperature {temperature:.4g}: valid log loss {calibration['valid_log_loss_before']:.4f} "
            f"-> {calibration['valid_log_loss_after']:.4f}", flush=True)  # fmt: skip
    return valid_scores, calibration


def _say_epoch(record: dict[str, float], current: float, setup: _Setup) -> None:
    valid = f"rmse {current:.4g}" if setup.prep.task == "regression" else f"loss {current:.4f}"
    print(f"epoch {record['epoch']}/{setup.cfg.epochs}: train loss {record['train_loss']:.4f}, valid {valid}",
          flush=True)  # fmt: skip


def train_model(
    train: pl.DataFrame | ParquetRows,
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
    deadline: float | None = None,
) -> TrainResult:
    """Train on `train` (the split in memory, or its Parquet files: each epoch then streams them in bounded
    memory, `evergreen.model.stream`), stop early on `valid_frame`, return the best model.

    `checkpoint` is written after every epoch and resumed from when its fingerprint matches; `on_epoch`
    receives each epoch's record (replayed for epochs restored from a checkpoint, so loggers see them all).
    `progress` shows a per-step bar on a terminal; when stderr is not one (DVC's output captured into
    Prefect logs) it prints one plain line per epoch instead, as a bar's carriage returns would flood logs.
    `warm` starts from a champion's weights and fine-tunes (`train.warm_epochs` at `lr * warm_lr_factor`);
    `group` is this process's place in a data-parallel run (`evergreen.model.distributed`): each rank trains
    on its shard of every batch, rank 0 evaluates and decides, and only rank 0 writes the checkpoint.
    `deadline` (a `time.monotonic()` instant; `train.time_budget_s` from now, whichever is sooner) ends
    training after the epoch that a next one would overrun; the best epoch's weights are the model.
    """
    started = time.perf_counter()
    if cfg.time_budget_s is not None:
        budget_end = time.monotonic() + cfg.time_budget_s
        deadline = budget_end if deadline is None else min(deadline, budget_end)
    say = print if group.leader else _quiet
    setup = _prepare(train, valid_frame, data, model_cfg, cfg, params, warm, group, say)
    state = _resume(setup, checkpoint, group, say)
    for record in state.history if on_epoch is not None else []:
        on_epoch(record)
    forward = group.wrap(setup.model, setup.model.member_outputs)  # DDP around it in a data-parallel run
    bar = progress and group.leader and sys.stderr.isatty()
    cfg, out_of_time = setup.cfg, False
    while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience and not out_of_time:
        epoch_started, state.epoch = time.monotonic(), state.epoch + 1
        total = _train_epoch(setup, state.epoch, forward, group, bar, deadline)
        record = _validate(setup, state.epoch, total, group)
        state.history.append(record)
        current = _keep_best(setup, state, record)
        if progress and not bar and group.leader:
            _say_epoch(record, current, setup)
        if checkpoint is not None:
            _save_checkpoint(setup, state, checkpoint, group)
        if on_epoch is not None:
            on_epoch(record)
        out_of_time = _out_of_time(deadline, epoch_started, group)
    if out_of_time and state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
        say(f"stopping after epoch {state.epoch}: the next would end past the time budget")
    setup.model.load_state_dict(state.best_state)  # the best epoch's weights are the model
    setup.model.eval()
    best = state.history[state.best_epoch - 1]
    valid_scores, calibration = _calibrate(setup, best, progress, say)
    metrics = {
        "model_type": model_cfg.type,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.epoch < cfg.epochs,
        "stopped_on_time": out_of_time and state.epoch < cfg.epochs and state.bad_epochs < cfg.patience,
        "train_loss": best["train_loss"],
        "valid": valid_scores,
        **({"calibration": calibration} if calibration is not None else {}),
        "n_train": setup.rows.n,
        **({"streamed": True} if isinstance(setup.rows, StreamedRows) else {}),
        "n_valid": len(setup.x_valid),
        "n_parameters": sum(p.numel() for p in setup.model.parameters()),
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "device": setup.device.type,
        "processes": group.world,
        "init": setup.init,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TrainResult(model=setup.model.cpu(), history=state.history, metrics=metrics)
