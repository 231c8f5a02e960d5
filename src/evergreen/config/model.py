"""`model`: the network's family and its knobs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from evergreen.config.base import StrictModel

Activation = Literal["relu", "gelu", "silu", "tanh"]
PositiveInt = Annotated[int, Field(gt=0)]


class ModelConfig(StrictModel):
    """The network: a family (`type`) over embedded categoricals and normalised numerics, plus its knobs.

    Every family gets the same preprocessing, output head, ensemble and additive terms; `crosses` are one more
    categorical field (an embedding input for mlp and resnet, one more token for ft_transformer).
    """

    # mlp: an MLP over the concatenated embeddings and numerics; resnet: residual blocks with LayerNorm
    # (Gorishniy et al. 2021); ft_transformer: one token per feature plus [CLS], a pre-norm transformer;
    # tabm: k weight-sharing members (BatchEnsemble) over numeric embeddings (Gorishniy et al. 2025);
    # auto: the deep families, LightGBM and their ensemble as candidates in train.time_budget_s, chosen on valid
    type: Literal["auto", "mlp", "resnet", "ft_transformer", "tabm"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256], min_length=1)  # mlp
    activation: Activation = "silu"  # every family's hidden layers (the transformer's feed-forward too)
    dropout: float = Field(0.1, ge=0, lt=1)  # hidden dropout: mlp layers, resnet blocks, transformer FFN
    embedding_dim: int = Field(8, ge=1, le=256)  # mlp and resnet, per categorical field
    d_main: int = Field(128, ge=1, le=4096)  # resnet: the width of the residual stream
    n_blocks: int = Field(3, ge=1, le=32)  # resnet blocks, transformer layers, or tabm blocks
    ffn_factor: float = Field(2.0, gt=0, le=16)  # hidden width of a block / FFN, as a multiple of its input
    residual_dropout: float = Field(0.0, ge=0, lt=1)  # resnet and ft_transformer: on each block's output
    d_token: int = Field(64, ge=1, le=1024)  # ft_transformer: the width of each feature's token
    heads: int = Field(4, ge=1, le=64)  # ft_transformer attention heads; must divide d_token
    attention_dropout: float = Field(0.1, ge=0, lt=1)  # ft_transformer
    # crossed categoricals, e.g. [[hr, workingday]]: one embedding per combination of values
    crosses: list[Annotated[list[str], Field(min_length=2)]] = Field(default_factory=list)
    # features kept out of the network and added to its output (one weight, or one value per category): main
    # effects that should extrapolate, such as a trend in `yr`, instead of interacting with everything
    additive: list[str] = Field(default_factory=list)
    target_transform: Literal["none", "log1p"] = "log1p"  # regression only; inverted inside the model
    # members trained side by side on the same batches and averaged: still one module, one ONNX graph
    ensemble: int = Field(1, ge=1, le=16)
    # tabm: k members sharing their weights (each trained on its own loss, the prediction is their mean),
    # n_blocks blocks of d_block units; numeric features through piecewise-linear embeddings (`bins` edges
    # from the train split's quantiles), periodic ones, or as they are (none), each d_embedding wide;
    # categorical fields one-hot, or embedded in embedding_dim
    k: int = Field(32, ge=1, le=256)
    d_block: int = Field(512, ge=1, le=8192)
    num_embeddings: Literal["piecewise_linear", "periodic", "none"] = "piecewise_linear"
    bins: int = Field(48, ge=2, le=1024)
    d_embedding: int = Field(16, ge=1, le=256)
    categorical_encoding: Literal["one_hot", "embedding"] = "one_hot"

    @field_validator("heads")
    @classmethod
    def _heads_divide_d_token(cls, heads: int, info: ValidationInfo) -> int:
        d_token = info.data.get("d_token")
        if d_token is not None and d_token % heads:
            raise ValueError(f"must divide model.d_token ({d_token}) evenly, one slice of each token per head")
        return heads

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for i, cross in enumerate(self.crosses):
            if len(set(cross)) != len(cross):
                raise ValueError(f"crosses[{i}] names a column twice: {cross}")
        return self
