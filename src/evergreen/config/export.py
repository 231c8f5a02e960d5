"""`export`: the ONNX export and its parity gate."""

from __future__ import annotations

from pydantic import Field

from evergreen.config.base import StrictModel


class ExportConfig(StrictModel):
    """ONNX export and the parity gate between onnxruntime and torch."""

    opset: int = Field(17, ge=17, le=23)
    # the gate: max |onnx - torch| over the test split must stay below this times the train target's std
    parity_tolerance: float = Field(1e-4, gt=0)
    latency_runs: int = Field(200, ge=10)
    throughput_batch: int = Field(1024, ge=1)
