"""The `tabm` family (Gorishniy et al., ICLR 2025, "TabM: Advancing Tabular Deep Learning with
Parameter-Efficient Ensembling"): k MLPs that share their weights, BatchEnsemble style, in one member.

The building blocks are the `tabm` and `rtdl_num_embeddings` packages; `TabM.forward` itself is not used,
as it does not export to ONNX with a dynamic batch (TorchScript fails on its `column_stack`). `TabMFamily.body`
is its export wrapper: numeric embeddings, categorical one-hot (or embeddings), the backbone and the k heads,
in plain ops. It returns the k members' outputs [k, N, out]: `TabularNet.member_outputs` puts them beside
those of the other members, so training takes the mean of the k members' losses (each member fitted on its
own, not the loss of their mean) and the prediction is the mean of the members (of their probabilities in
classification) with no code of its own in the loop.

Piecewise-linear embeddings need bin edges from the train split's quantiles, which the network does not
have when it is built (nor when a saved model is rebuilt): their buffers have a fixed shape, `bins` per
feature (fewer real bins sit as zeros, as `rtdl_num_embeddings` pads them), and `fit` fills them from the
train rows before training; the state dict carries them from then on.
"""

from __future__ import annotations

import rtdl_num_embeddings as rtdl
import tabm
import torch
from torch import nn

from evergreen.config import ModelConfig
from evergreen.model.network import Columns, _Member

_ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "tanh": "Tanh"}  # names in torch.nn
_QUANTILE_ROWS = 1 << 24  # torch.quantile refuses larger inputs


def quantile_edges(values: torch.Tensor, bins: int) -> list[torch.Tensor]:
    """Each column's bin edges: the distinct quantiles at `bins` + 1 evenly spaced levels (at least 2 edges).

    A column with one value gets one bin around it; ties (a discrete column) merge bins, so some columns have
    fewer than `bins`. Rows past 2^24 are left out (a strided subsample): torch.quantile's limit.
    """
    values = values[:: max(1, -(-len(values) // _QUANTILE_ROWS))].double()
    levels = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    edges = []
    for column in torch.quantile(values, levels, dim=0).T:
        unique = column.unique()
        edges.append(unique.float() if len(unique) > 1 else torch.stack([unique[0] - 0.5, unique[0] + 0.5]).float())
    return edges


class TabMFamily(_Member):
    """k weight-sharing MLPs over embedded numerics and one-hot (or embedded) categoricals; see the module."""

    def __init__(self, n_codes: int, deep: Columns, additive: Columns, config: ModelConfig, n_out: int) -> None:
        super().__init__(deep, additive)
        n_numeric, n_fields = len(self.deep_numeric), len(self.deep_fields)
        self.k, self.n_codes, self.one_hot = config.k, max(n_codes, 1), config.categorical_encoding == "one_hot"
        self.num_embeddings = self._numeric_module(config, n_numeric)
        d_numeric = 1 if self.num_embeddings is None else config.d_embedding
        chunks = [d_numeric] * n_numeric  # the width of each feature's part of the input
        if n_fields and self.one_hot:
            self.register_buffer("code_range", torch.arange(self.n_codes))
            chunks.append(self.n_codes)  # the fields' one-hots side by side, as one multi-hot
        elif n_fields:
            self.embedding = nn.Embedding(self.n_codes, config.embedding_dim)
            chunks += [config.embedding_dim] * n_fields
        if not chunks:
            chunks = [1]  # additive features only: the backbone sees a constant
        self.backbone = tabm.make_tabm_backbone(
            d_in=sum(chunks), n_blocks=config.n_blocks, d_block=config.d_block, dropout=config.dropout,
            activation=_ACTIVATIONS[config.activation], k=config.k, arch_type="tabm",
            # the paper's choice: random signs on raw inputs, a normal scaling after numeric embeddings
            start_scaling_init="random-signs" if self.num_embeddings is None else "normal",
            start_scaling_init_chunks=chunks,
        )  # fmt: skip
        self.head = tabm.LinearEnsemble(config.d_block, n_out, k=config.k)
        self._init_additive(n_codes, n_out)

    @staticmethod
    def _numeric_module(config: ModelConfig, n_numeric: int) -> nn.Module | None:
        if n_numeric == 0 or config.num_embeddings == "none":
            return None
        if config.num_embeddings == "periodic":
            return rtdl.PeriodicEmbeddings(n_numeric, config.d_embedding, lite=False)
        # placeholder edges, replaced by `fit`; version B starts as a linear embedding and learns the rest
        placeholder = [torch.linspace(-1.0, 1.0, config.bins + 1) for _ in range(n_numeric)]
        module = rtdl.PiecewiseLinearEmbeddings(placeholder, config.d_embedding, activation=False, version="B")
        # always a tensor (None when every feature has several bins): the state dict's keys must not depend on
        # the data, or a saved model could not be rebuilt before loading its state
        module.impl.single_bin_mask = torch.zeros(n_numeric, dtype=torch.bool)
        return module

    @torch.no_grad()
    def fit(self, numeric: torch.Tensor, codes: torch.Tensor) -> None:
        """Fill the piecewise-linear bins from the train split's normalised numerics (nothing else to fit)."""
        del codes
        if not isinstance(self.num_embeddings, rtdl.PiecewiseLinearEmbeddings):
            return
        impl = self.num_embeddings.impl
        edges = quantile_edges(numeric[:, self.deep_numeric].cpu(), impl.weight.shape[1])
        fitted = rtdl._PiecewiseLinearEncodingImpl(edges)
        # the layout of `rtdl`: a feature's leading bins first, its last bin in the last column, zeros between
        width = fitted.weight.shape[1]
        for name in ("weight", "bias"):
            target, source = getattr(impl, name), getattr(fitted, name).to(impl.weight.device)
            target.zero_()
            target[:, : width - 1] = source[:, : width - 1]
            target[:, -1] = source[:, -1]
        single = fitted.single_bin_mask
        impl.single_bin_mask.copy_(single if single is not None else torch.zeros_like(impl.single_bin_mask))

    def body(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The k members' outputs [k, N, out]."""
        parts = []
        if self.deep_numeric:
            x = numeric[:, self.deep_numeric]
            parts.append(x if self.num_embeddings is None else self.num_embeddings(x).flatten(1))
        if self.deep_fields and self.one_hot:
            # one-hot by comparison (no OneHot op): each field's code is its own column of the multi-hot
            fields = codes[:, self.deep_fields]
            parts.append((fields.unsqueeze(-1) == self.code_range).any(dim=1).to(numeric.dtype))
        elif self.deep_fields:
            parts.append(self.embedding(codes[:, self.deep_fields]).flatten(1))
        if not parts:
            parts.append(numeric.new_ones((numeric.shape[0], 1)))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        x = x.unsqueeze(1).expand(-1, self.k, -1)  # [N, k, d]: every member sees the row (tabm.EnsembleView)
        return self.head(self.backbone(x)).transpose(0, 1)
