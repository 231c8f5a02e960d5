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
