"""Where each stage's outputs live: with `dvc.yaml`'s outs, this is the project's data catalog."""

from pathlib import Path

RAW = Path("data/raw/raw.parquet")
RAW_CONFLICTS = Path("data/raw/key_conflicts.parquet")
CLEAN = Path("data/clean/clean.parquet")
QUARANTINE_DIR = Path("data/quarantine")
QUARANTINE = QUARANTINE_DIR / "quarantine.parquet"
SPLIT_DIR = Path("data/split")
METRICS_DIR = Path("metrics")
DATA_METRICS = METRICS_DIR / "data.json"
INGEST_METRICS = METRICS_DIR / "ingest.json"
SPLIT_METRICS = METRICS_DIR / "split.json"
SPLITS = ("train", "valid", "test")


def split_path(name: str) -> Path:
    return SPLIT_DIR / f"{name}.parquet"


# model stages (train, evaluate, export)
MODEL_DIR = Path("models")
MODEL = MODEL_DIR / "model.pt"
CHECKPOINT = MODEL_DIR / "checkpoint.pt"
ONNX_MODEL = MODEL_DIR / "model.onnx"
SIGNATURE = MODEL_DIR / "signature.json"
MODEL_CARD = MODEL_DIR / "model_card.json"
TRAIN_METRICS = METRICS_DIR / "train.json"
EVAL_METRICS = METRICS_DIR / "eval.json"
EXPORT_METRICS = METRICS_DIR / "export.json"
DVCLIVE_DIR = Path("dvclive")
EVAL_REPORTS = Path("reports/eval")
PREDICTIONS_CSV = EVAL_REPORTS / "predictions.csv"  # regression plots: actual vs predicted, error over time
CONFUSION_CSV = EVAL_REPORTS / "confusion.csv"  # classification plot
TEST_PREDICTIONS = EVAL_REPORTS / "test_predictions.parquet"  # full-precision test predictions
DVC_LOCK = Path("dvc.lock")
PROMOTION_METRICS = METRICS_DIR / "promotion.json"
