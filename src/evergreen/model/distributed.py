"""Data-parallel plumbing for the training loop: launching through torchrun, the process group, sharding.

With `train.distributed` set, the `train` stage runs `python -m torch.distributed.run ... -m evergreen.cli stage
train` (`launch`); each process it starts finds `LOCAL_RANK` in its environment, joins the process group
(`process_group`) and runs the same loop as a single process, with a `Group` that says which part is its own:

- every rank draws the same permutation (one seed) and takes every `world`-th row of each global batch
  (`Group.shard`), so the shards are disjoint and cover the data, and `train.batch_size` is the global batch:
  a 2-process run takes the same optimiser steps on the same batches as a 1-process one;
- DistributedDataParallel averages the gradients; each rank's loss is weighted by its share of the batch, so
  the average is the gradient of the whole batch's loss even when the last batch splits unevenly;
- rank 0 alone evaluates the valid split and sends its record to the others (`Group.from_leader`): every rank
  then makes the same early-stopping decision from the same numbers, and none waits on a peer that stopped;
- rank 0 alone writes the checkpoint, the DVCLive curves and the model; a resumed run reads the checkpoint on
  rank 0 and sends it to the others, so other nodes need no copy of it.

A single process (the default) gets `SINGLE`, whose methods return their input: one code path for both.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from evergreen.config import DistributedConfig
from evergreen.errors import ConfigError, ModelError

# torchrun sets these in every process it starts: their presence means "already launched, do not relaunch"
LAUNCHED_ENV = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")
# where each rank writes the error that stopped it, for the launcher to name the failing rank
ERRORS_ENV = "EVERGREEN_RANK_ERRORS"


def launched() -> bool:
    """Whether this process was started by torchrun."""
    return any(name in os.environ for name in LAUNCHED_ENV)


def resolve_backend(cfg: DistributedConfig) -> str:
    """`auto` is NCCL with CUDA, gloo without; NCCL without CUDA is a `ConfigError`."""
    cuda = torch.cuda.is_available()
    if cfg.backend == "nccl" and not cuda:
        raise ConfigError(
            "train.distributed.backend is 'nccl', which needs CUDA, and no CUDA device is available "
            "(use backend: gloo on CPU, or auto)"
        )
    if cfg.backend == "auto":
        return "nccl" if cuda else "gloo"
    return cfg.backend


def torchrun_command(cfg: DistributedConfig, args: list[str]) -> list[str]:
    """The torchrun command line that runs `python -m <args>` in `nproc_per_node` x `nnodes` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc_per_node}"]
    if cfg.rdzv_endpoint is None:
        command.append("--standalone")  # one node: a local rendezvous on a free port
    else:
        command += [f"--nnodes={cfg.nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={cfg.rdzv_endpoint}",
                    "--rdzv_id=evergreen-train"]  # fmt: skip
    return [*command, "-m", *args]


def launch(cfg: DistributedConfig, root: Path, args: list[str]) -> None:
    """Run `python -m <args>` in `root` through torchrun; a failure is a `ModelError` naming the failing rank."""
    resolve_backend(cfg)  # a backend this machine cannot run fails here, before any process starts
    with tempfile.TemporaryDirectory(prefix="evergreen-ranks-") as errors:
        env = {**os.environ, ERRORS_ENV: errors}
        status = _run_forwarding_signals(torchrun_command(cfg, args), root, env)
        if status == 0:
            return
        failed = sorted(Path(errors).glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
        why = "; ".join(f"rank {p.stem.split('-')[1]}: {p.read_text().strip()}" for p in failed)
        raise ModelError(
            f"data-parallel training failed (torchrun exit status {status}): "
            + (
                why
                or "no rank recorded an error: one was killed, or failed before its training started (an "
                "import, the CLI, the project files); its own message is in the output above"
            )
        )


def _run_forwarding_signals(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run `command` and pass SIGTERM and SIGINT on to it: torchrun starts its workers in sessions of their
    own, so a stop sent to this process alone (DVC, Prefect cancelling a run) must reach torchrun, which stops
    them; otherwise they would train on, orphaned, and race the rerun for the checkpoint."""
    process = subprocess.Popen(command, cwd=cwd, env=env)
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        return process.wait()
    previous = {s: signal.signal(s, lambda signum, _: process.send_signal(signum)) for s in _FORWARDED}
    try:
        return process.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


_FORWARDED = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def recording_errors(rank: int) -> Iterator[None]:
    """Write an exception escaping the block to the launcher's error folder (when there is one) and re-raise."""
    try:
        yield
    except BaseException as exc:
        folder = os.environ.get(ERRORS_ENV)
        if folder:
            Path(folder, f"rank-{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")
        raise


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes: rank 0 of 1 for a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        """Rank 0: the one that evaluates, decides and writes."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process on a node: CUDA's index is the local rank."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.world > 1 else device

    def shard(self, batch: torch.Tensor) -> tuple[torch.Tensor, int, float]:
        """This rank's rows of a global batch, how many are really its own, and the weight of its loss.

        The weight world * own / len(batch) makes DDP's average of the ranks' gradients the gradient of the
        mean loss over the whole batch. A rank left without rows (a last batch shorter than the world) takes
        one row at weight 0: every rank must run backward, or DDP's all-reduce would wait for it forever.
        """
        if self.world == 1:
            return batch, len(batch), 1.0
        own = batch[self.rank :: self.world]
        if len(own) == 0:
            return batch[:1], 0, 0.0
        return own, len(own), self.world * len(own) / len(batch)

    def wrap(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
        """`forward` for training: as it is in one process, through DistributedDataParallel in several
        (DDP only synchronises gradients of what runs through its own `forward`)."""
        if self.world == 1:
            return forward
        # buffers are the preprocessing, equal on every rank and never trained: no broadcast at each step (the
        # argument's name changed in torch 2.13; older versions know only the deprecated one)
        ddp = nn.parallel.DistributedDataParallel
        off = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else None
        return ddp(_Forward(model, forward), **{off or "broadcast_buffers": False})

    def sum(self, value: float) -> float:
        """`value` summed over the ranks."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def from_leader(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank (what the others pass is ignored)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = Group()


class _Forward(nn.Module):
    """A module whose `forward` is `forward`: what DDP wraps when training calls a method other than forward."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self._forward = model, forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)


@contextlib.contextmanager
def process_group(cfg: DistributedConfig | None) -> Iterator[Group]:
    """The group this process belongs to: `SINGLE` unless launched by torchrun, else joined for the block."""
    if cfg is None or not launched():
        yield SINGLE
        return
    backend = resolve_backend(cfg)
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)  # rank, world size and the store's address come from torchrun's env
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), local_rank)
    finally:
        dist.destroy_process_group()
