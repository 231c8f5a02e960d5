"""The tabular network: preprocessing buffers, a model family (`model.type`) or an ensemble of them, one module.

Input: float32 [N, F] of raw feature values in `prep.features` order (categoricals as their code values,
missing values as NaN). Output: predictions in target units [N] (regression) or class probabilities
[N, C] (classification, with the temperature fitted on the valid split). The same forward runs in training,
evaluation and the exported ONNX graph.

Families (each member of an ensemble is one of them, all fed by `TabularNet.encode`):
- `mlp`: embeddings of the categorical fields, concatenated with the normalised numerics, into an MLP;
- `resnet`: the same inputs, a linear map to `d_main`, then `n_blocks` residual blocks
  x + Dropout(Linear(Dropout(act(Linear(LayerNorm(x)))))) and a LayerNorm-act-Linear head (Gorishniy et al.
  2021, "Revisiting Deep Learning Models for Tabular Data"; LayerNorm, not their BatchNorm, so a row's output
  does not depend on its batch and a last batch of one row trains);
- `ft_transformer`: one `d_token` token per numeric feature (value * weight + bias) and per categorical field
  (an embedding), plus a learnt [CLS] token, through a pre-norm `nn.TransformerEncoder`; the head reads [CLS];
- `tabm`: k weight-sharing MLPs in one member (`evergreen.model.tabm`), whose k outputs count as k members.
Crosses are categorical fields like any other (one more embedding input, or one more token). Additive
features skip the family and are added to its output, in every family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from evergreen.config import ModelConfig
from evergreen.errors import ModelError
from evergreen.model.preprocess import Preprocessing

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}

Columns = tuple[list[int], list[int]]  # (positions among the numeric columns, among the embedding fields)


class _Member(nn.Module):
    """One network of the ensemble: a family's `body` over the deep inputs, plus the additive terms."""

    def __init__(self, deep: Columns, additive: Columns) -> None:
        super().__init__()
        self.deep_numeric, self.deep_fields = deep
        self.additive_numeric, self.additive_fields = additive

    def _init_additive(self, n_codes: int, n_out: int) -> None:
        # created after the body, so that a family's initialisation draws the same random numbers as before
        if self.additive_numeric:
            self.additive_linear = nn.Linear(len(self.additive_numeric), n_out, bias=False)
            nn.init.zeros_(self.additive_linear.weight)
        if self.additive_fields:
            self.additive_embedding = nn.Embedding(max(n_codes, 1), n_out)
            nn.init.zeros_(self.additive_embedding.weight)

    def body(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The family's output [N, outputs] (or [k, N, outputs] for a family of k members, such as tabm) from
        all normalised numerics and all embedding row indices."""
        raise NotImplementedError

    def fit(self, numeric: torch.Tensor, codes: torch.Tensor) -> None:
        """Fit what the family learns from the train split's inputs before training (tabm's bins); most don't."""

    def _concatenated(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """mlp and resnet inputs: the deep numerics and the flattened embeddings of the deep fields."""
        parts = [numeric[:, self.deep_numeric]]
        if self.deep_fields:
            parts.append(self.embedding(codes[:, self.deep_fields]).flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        out = self.body(numeric, codes)
        if self.additive_numeric:
            out = out + self.additive_linear(numeric[:, self.additive_numeric])
        if self.additive_fields:
            out = out + self.additive_embedding(codes[:, self.additive_fields]).sum(dim=1)
        return out


class _MLP(_Member):
    def __init__(self, n_codes: int, deep: Columns, additive: Columns, config: ModelConfig, n_out: int) -> None:
        super().__init__(deep, additive)
        self.embedding = nn.Embedding(max(n_codes, 1), config.embedding_dim)
        layers: list[nn.Module] = []
        width = len(self.deep_fields) * config.embedding_dim + len(self.deep_numeric)
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[config.activation](), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_out))
        self.mlp = nn.Sequential(*layers)
        self._init_additive(n_codes, n_out)

    def body(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.mlp(self._concatenated(numeric, codes))


class _ResNet(_Member):
    def __init__(self, n_codes: int, deep: Columns, additive: Columns, config: ModelConfig, n_out: int) -> None:
        super().__init__(deep, additive)
        self.embedding = nn.Embedding(max(n_codes, 1), config.embedding_dim)
        width, hidden = config.d_main, max(1, round(config.d_main * config.ffn_factor))
        activation = _ACTIVATIONS[config.activation]
        self.first = nn.Linear(len(self.deep_fields) * config.embedding_dim + len(self.deep_numeric), width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, hidden),
                activation(),
                nn.Dropout(config.dropout),
                nn.Linear(hidden, width),
                nn.Dropout(config.residual_dropout),
            )
            for _ in range(config.n_blocks)
        )
        self.head = nn.Sequential(nn.LayerNorm(width), activation(), nn.Linear(width, n_out))
        self._init_additive(n_codes, n_out)

    def body(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        x = self.first(self._concatenated(numeric, codes))
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


class _FTTransformer(_Member):
    def __init__(self, n_codes: int, deep: Columns, additive: Columns, config: ModelConfig, n_out: int) -> None:
        super().__init__(deep, additive)
        d = config.d_token
        bound = d**-0.5  # the feature tokenizer's initialisation in Gorishniy et al.
        self.numeric_weight = nn.Parameter(torch.empty(len(self.deep_numeric), d).uniform_(-bound, bound))
        self.numeric_bias = nn.Parameter(torch.empty(len(self.deep_numeric), d).uniform_(-bound, bound))
        self.embedding = nn.Embedding(max(n_codes, 1), d)
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        self.cls = nn.Parameter(torch.empty(d).uniform_(-bound, bound))
        layer = nn.TransformerEncoderLayer(
            d,
            config.heads,
            dim_feedforward=max(1, round(d * config.ffn_factor)),
            dropout=config.dropout,
            activation=_ACTIVATIONS[config.activation](),
            batch_first=True,
            norm_first=True,  # pre-norm: stable without warm-up tricks, as the paper recommends
        )
        # the layer has one dropout for everything: split it into attention, feed-forward and residual
        layer.self_attn.dropout = config.attention_dropout
        layer.dropout1 = nn.Dropout(config.residual_dropout)
        layer.dropout2 = nn.Dropout(config.residual_dropout)
        # no nested tensors: every row has every token, and the plain path is what exports to ONNX
        self.encoder = nn.TransformerEncoder(layer, config.n_blocks, enable_nested_tensor=False)
        activation = _ACTIVATIONS[config.activation]
        self.head = nn.Sequential(nn.LayerNorm(d), activation(), nn.Linear(d, n_out))
        self._init_additive(n_codes, n_out)

    def body(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        tokens = [
            self.cls.expand(numeric.shape[0], 1, -1),
            numeric[:, self.deep_numeric].unsqueeze(-1) * self.numeric_weight + self.numeric_bias,
        ]
        if self.deep_fields:
            tokens.append(self.embedding(codes[:, self.deep_fields]))
        x = self.encoder(torch.cat(tokens, dim=1))
        return self.head(x[:, 0])  # the [CLS] token


_FAMILIES: dict[str, type[_Member]] = {"mlp": _MLP, "resnet": _ResNet, "ft_transformer": _FTTransformer}


def _family(name: str) -> type[_Member]:
    if name == "tabm":
        # imported here: evergreen.model.tabm builds on `_Member`, so it imports this module
        from evergreen.model.tabm import TabMFamily

        return TabMFamily
    return _FAMILIES[name]


class TabularNet(nn.Module):
    """Raw feature values in, predictions in target units out; owns its save, load and predict."""

    def __init__(self, prep: Preprocessing, config: ModelConfig, params: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.prep, self.config, self.params = prep, config, params or {}
        vocab_sizes = [len(v) + 1 for v in prep.vocabularies]  # +1: index 0 is the unknown bucket
        longest = max(vocab_sizes, default=1)
        vocab = torch.full((len(vocab_sizes), longest), float("nan"))  # NaN padding never matches a value
        for i, values in enumerate(prep.vocabularies):
            vocab[i, : len(values)] = torch.tensor(values, dtype=torch.float32)
        self.cross_sizes = [[vocab_sizes[i] for i in cross] for cross in prep.crosses]
        field_sizes = vocab_sizes + [int(np.prod(sizes)) for sizes in self.cross_sizes]
        offsets = np.concatenate([[0], np.cumsum(field_sizes)[:-1]]).astype(np.int64)
        self.register_buffer("numeric_index", torch.tensor(prep.numeric, dtype=torch.long))
        self.register_buffer("categorical_index", torch.tensor(prep.categorical, dtype=torch.long))
        self.register_buffer("numeric_mean", torch.tensor(prep.numeric_mean, dtype=torch.float32))
        self.register_buffer("numeric_std", torch.tensor(prep.numeric_std, dtype=torch.float32))
        self.register_buffer("numeric_fill", torch.tensor(prep.numeric_fill, dtype=torch.float32))
        # NaN: no fill, a missing code stays NaN and matches no vocabulary value (the unknown bucket)
        fills = prep.categorical_fill or [None] * len(prep.categorical)
        fill = [float("nan") if v is None else v for v in fills]
        self.register_buffer("categorical_fill", torch.tensor(fill, dtype=torch.float32))
        self.register_buffer("vocab", vocab)
        self.register_buffer("vocab_rank", torch.arange(1, longest + 1, dtype=torch.float32))
        self.register_buffer("offsets", torch.tensor(offsets[: len(field_sizes)], dtype=torch.long))
        n_out = 1 if prep.task == "regression" else len(prep.classes)
        numeric_names = [prep.features[i] for i in prep.numeric]
        field_names = [prep.features[i] for i in prep.categorical] + ["x".join(map(str, c)) for c in prep.crosses]

        def positions(names: list[str], additive: bool) -> list[int]:
            return [i for i, name in enumerate(names) if (name in config.additive) == additive]

        deep = (positions(numeric_names, False), positions(field_names, False))
        additive = (positions(numeric_names, True), positions(field_names, True))
        family = _family(config.type)
        self.members = nn.ModuleList(family(sum(field_sizes), deep, additive, config, n_out)
                                     for _ in range(config.ensemble))  # fmt: skip
        # classification: logits are divided by this before the softmax; fitted on the valid split after
        # training (`evergreen.model.train.fit_temperature`), 1 until then and for regression
        self.register_buffer("temperature", torch.ones(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw [N, F] → normalised numerics [N, Fn] and embedding row indices [N, fields]."""
        numeric = x[:, self.numeric_index]
        numeric = torch.where(torch.isnan(numeric), self.numeric_fill, numeric)
        numeric = (numeric - self.numeric_mean) / self.numeric_std
        categorical = x[:, self.categorical_index]
        categorical = torch.where(torch.isnan(categorical), self.categorical_fill, categorical)
        # position of each value in its vocabulary, 1-based; 0 when unseen in training (or missing)
        matches = (categorical.unsqueeze(-1) == self.vocab).to(x.dtype)
        index = (matches * self.vocab_rank).sum(-1).to(torch.long)
        fields = [index[:, i] for i in range(index.shape[1])]
        for cross, sizes in zip(self.prep.crosses, self.cross_sizes, strict=True):
            combined = index[:, cross[0]]
            for position, size in zip(cross[1:], sizes[1:], strict=True):
                combined = combined * size + index[:, position]
            fields.append(combined)
        if not fields:
            return numeric, torch.zeros((x.shape[0], 0), dtype=torch.long, device=x.device)
        return numeric, torch.stack(fields, dim=1) + self.offsets

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's raw output [K, N, outputs]: the standardised transformed target, or class logits.

        A family of k members (tabm) gives k of the K: training fits each on its own, prediction averages all.
        """
        numeric, codes = self.encode(x)
        outputs = [member(numeric, codes) for member in self.members]
        return torch.cat([out if out.dim() == 3 else out.unsqueeze(0) for out in outputs])

    @torch.no_grad()
    def fit_to_train(self, x: torch.Tensor) -> None:
        """Let each member fit what it learns from the train split's raw inputs `x` before training."""
        numeric, codes = self.encode(x)
        for member in self.members:
            member.fit(numeric, codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.member_outputs(x).float()
        if self.prep.task == "classification":
            return torch.softmax(out / self.temperature, dim=-1).mean(dim=0)
        y = out[..., 0] * self.prep.target_std + self.prep.target_mean
        if self.prep.target_transform == "log1p":
            y = torch.exp(y) - 1  # not expm1: the TorchScript ONNX exporter has no symbol for it
        return y.mean(dim=0)

    @torch.no_grad()
    def predict(self, frame: pl.DataFrame, batch_size: int = 65536) -> np.ndarray:
        """Predictions for a polars frame: target units [N] (regression) or class probabilities [N, C]."""
        missing = [name for name in self.prep.input_columns if name not in frame.columns]
        if missing:
            raise ModelError(f"the frame lacks feature column(s): {', '.join(missing)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        x = torch.from_numpy(self.prep.matrix(frame))
        out = [self(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        self.train(was_training)
        if not out:
            shape = (0,) if self.prep.task == "regression" else (0, len(self.prep.classes))
            return np.zeros(shape)
        return torch.cat(out).double().numpy()

    def load_matching(self, other: TabularNet) -> tuple[list[str], list[str]]:
        """Copy `other`'s trained parameters into this network where name and shape match (a warm start).

        Buffers (the preprocessing, the temperature) stay this network's own. Returns the parameters copied
        and those left at their initialisation (new or reshaped: a feature added, a vocabulary grown).
        """
        theirs = dict(other.named_parameters())
        copied, kept = [], []
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                source = theirs.get(name)
                if source is not None and source.shape == parameter.shape:
                    parameter.copy_(source)
                    copied.append(name)
                else:
                    kept.append(name)
        return copied, kept

    def save(self, path: Path | str) -> None:
        """Write state dict, architecture config, preprocessing and the resolved params to one file."""
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                "config": self.config.model_dump(mode="json"),
                "preprocessing": self.prep.to_dict(),
                "params": self.params,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path | str) -> TabularNet:
        """Rebuild a model written by `save`, on CPU, in eval mode."""
        if not Path(path).exists():
            raise ModelError(f"{path}: no such model file (run `evergreen stage train` first)")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = cls(Preprocessing.from_dict(saved["preprocessing"]), ModelConfig(**saved["config"]), saved["params"])
        state = saved["state_dict"]
        state.setdefault("temperature", torch.ones(()))  # a model saved before temperature scaling existed
        state.setdefault("categorical_fill", net.categorical_fill)  # saved before categorical fills existed
        net.load_state_dict(state)
        return net.eval()
