"""`train`: the training loop (optimiser, schedule, early stopping, device, warm start, data parallelism)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from evergreen.config.base import StrictModel


class DistributedConfig(StrictModel):
    """Data-parallel training: the `train` stage relaunches itself through torchrun with this many processes."""

    nproc_per_node: int = Field(ge=1, description="processes per node: one per GPU, or a few on CPU")
    nnodes: int = Field(1, ge=1)
    # auto: NCCL when CUDA is present, gloo on CPU; nccl without CUDA is refused when the stage starts
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    # host:port of the rendezvous (c10d) for more than one node; None on one node (torchrun --standalone)
    rdzv_endpoint: str | None = None

    @model_validator(mode="after")
    def _endpoint_for_many_nodes(self) -> DistributedConfig:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes is {self.nnodes}: give rdzv_endpoint (host:port) for the nodes to meet at")
        return self


class StreamConfig(StrictModel):
    """A long train split is read from its Parquet pieces each epoch instead of being loaded whole."""

    # a train split of at least this many rows streams (`evergreen.model.stream`); a shorter one is loaded whole
    from_rows: int = Field(1_000_000, ge=1)
    # rows shuffled together: the buffer is filled from the pieces (in a fresh order each epoch) and permuted
    shuffle_rows: int = Field(262_144, ge=1)
    # a streamed split's seeded sample: its medians and tabm's bin edges; the valid rows that stop training
    sample_rows: int = Field(1_000_000, ge=1)


class TrainConfig(StrictModel):
    """The training loop: optimiser, schedule, early stopping, device and seed."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(40, ge=1)
    # auto: from the train rows, 256 under 10k, doubling with the rows up to 4096 (`evergreen.model.train`)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 256
    lr: float = Field(3e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, gt=0, lt=1, description="fraction of steps spent warming up (onecycle)")
    grad_clip: float | None = Field(1.0, gt=0)
    patience: int = Field(10, ge=1, description="epochs without improvement on valid before stopping")
    # classification only: "none" keeps the class prior the data has, so probabilities stay calibrated
    class_weight: Literal["none", "balanced"] = "none"
    # also write TensorBoard event files (needs the `tensorboard` extra): `tensorboard --logdir tensorboard`
    tensorboard: bool = False
    # None: one process (the default). Else data-parallel over torchrun; batch_size stays the global batch
    distributed: DistributedConfig | None = None
    # scratch: random weights; champion: start from the registry champion's weights (and preprocessing, when
    # the schema is unchanged) and fine-tune for warm_epochs at lr * warm_lr_factor
    init: Literal["scratch", "champion"] = "scratch"
    warm_epochs: int = Field(10, ge=1)
    warm_lr_factor: float = Field(0.3, gt=0, le=1)
    # torch threads, set once when the stage starts: auto is this process's CPU allowance (affinity and
    # cgroup quota) less the CPUs other processes keep busy; a number pins it
    threads: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"
    # stop after the epoch that would end past this many seconds of training (the best epoch is kept); None:
    # epochs and patience alone decide. `model.type: auto` shares it out between its candidates
    time_budget_s: float | None = Field(None, gt=0)
    stream: StreamConfig = StreamConfig()
