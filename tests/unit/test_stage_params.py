"""The params a stage's own code reads against the `params:` its `dvc.yaml` entry lists.

A param a stage reads but does not list does not rerun the stage when it changes: `train` chose its classifier's
decision weights for `promote.metric` while a new metric left the trained model in DVC's cache. The stage
modules are scanned for `params.<section>.<key>` (the code below them gets its config from them, so what they
pass down is a whole section, which must then be listed whole or field by field).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from evergreen.config import Params

ROOT = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# reads that stand for another param: a property computed from it, or the method that reads it
STANDS_FOR = {
    "data.id_column": "data.columns",
    "data.target": "data.columns",
    "promote.metric_for": "promote.metric",
}
# where partitions run, not what they make: deliberately not an input (README, "Partition work on Dask")
NOT_INPUTS = {"data.scheduler"}
# Read but not listed, knowingly. Both are optional keys (params.yaml may leave them to their default), and DVC
# fails on a listed key that is missing; listing their whole section instead would rerun `train` on every gate
# setting. So changing `promote.metric` does not retrain (a classifier's decision weights stay fitted for the
# old metric) and changing `model.type` alone reruns `promote` only through the new model it trains.
KNOWN_GAPS = {"train": {"promote.metric"}, "evaluate": {"promote.metric"}, "export": {"promote.metric"},
              "promote": {"model.type"}}  # fmt: skip
READ = re.compile(r"\bparams\.([a-z_]+)(?:\.([a-z_]+))?")


def _reads(stage: str) -> set[str]:
    source = (ROOT / "src/evergreen/stages" / f"{stage}.py").read_text()
    found = set()
    for section, key in READ.findall(source):
        if section in Params.model_fields:
            found.add(STANDS_FOR.get(f"{section}.{key}", f"{section}.{key}") if key else section)
    return found - NOT_INPUTS


def _covered(read: str, declared: list[str]) -> bool:
    section = read.split(".")[0]
    if "." not in read:  # a whole section passed down: listed whole, or some of its fields named
        return any(d == section or d.startswith(section + ".") for d in declared)
    return read in declared or section in declared


@pytest.mark.parametrize("stage", [s for s in STAGES if (ROOT / "src/evergreen/stages" / f"{s}.py").exists()])
def test_every_param_a_stage_reads_is_in_its_params_list(stage: str) -> None:
    declared = [p if isinstance(p, str) else next(iter(p)) for p in STAGES[stage].get("params", [])]
    missing = sorted(r for r in _reads(stage) - KNOWN_GAPS.get(stage, set()) if not _covered(r, declared))
    assert not missing, f"dvc.yaml stage {stage!r} reads {missing} without listing them under params:"
