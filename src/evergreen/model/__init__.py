"""The torch side: the network (`network`), its fitted preprocessing (`preprocess`), training (`train`),
baselines (`baselines`), metrics (`metrics`, torch-free) and ONNX export with its parity gate (`export`).
Serving never imports this package; it scores the exported graph through `evergreen.inference`."""

__all__ = ["baselines", "export", "metrics", "network", "preprocess", "train"]
