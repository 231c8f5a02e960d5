"""Typed contracts between steps: each JSON file one step writes and another reads has one type here.

- `metrics/eval.json`: `EvalReport`, written by stage `evaluate`; read by stages `export` and `promote` and by
  `evergreen run`'s summary;
- `metrics/export.json`: `ExportReport`, written by stage `export`; read by stage `promote` and the summary;
- `metrics/promotion.json`: `PromotionReport`, written by stage `promote`; read by the `retrain` flow;
- `models/model_card.json` and each registry version's `model_card.json`: `ModelCard`, written by stages
  `export` and `promote` and by the `retrain` flow (see `card`); read by `evergreen models` and monitoring;
- the decisions log (`monitor.decisions`, JSON lines): `RetrainDecision`, `RetrainResult` and `ShadowDecision`,
  written by monitoring, the shadow gate and the `retrain` and `monitor` flows; read by the retraining policy
  (see `decisions`).

The types: `reports` (the three metrics files, and the gate's decision they carry), `card` and `decisions`, on
a common base (`base`). Each round-trips through JSON (`from_dict`/`to_dict`; files with `read`/`write`), keeps
keys it does not know, and fails with an `ArtifactError` naming the file and key when a known key has the wrong
type. This package sits below stages, flows and the other library packages (it imports only `evergreen.data.io`
and `evergreen.errors`, no torch), so anything may read an artefact.
"""

__all__ = ["base", "card", "decisions", "reports"]
