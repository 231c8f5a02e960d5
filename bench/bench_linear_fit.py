"""Time the linear baseline's fit (`baselines.fit_linear`) against the same function in earlier code, side by
side on the same sampled rows of a built project.

    git worktree add /tmp/before 2557f12
    python bench/bench_linear_fit.py PROJECT --before /tmp/before/src --rows 2000000

PROJECT is a project with a split and a trained model (e.g. one `bench_train_stream.py` builds; its
preprocessing gives the input matrix). Prints each fit's seconds and the penalty it chose: new, before, new.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evergreen.data.parquet_rows import ParquetRows, sample_rows  # noqa: E402
from evergreen.data.split import split_pieces  # noqa: E402
from evergreen.model import baselines  # noqa: E402
from evergreen.model.candidates import load_candidate  # noqa: E402
from evergreen.stages.evaluate import _actual  # noqa: E402
from evergreen.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="the src/ folder of the earlier code")
    parser.add_argument("--rows", type=int, default=2_000_000, help="sampled train (and valid) rows")
    opts = parser.parse_args()
    spec = importlib.util.spec_from_file_location("before", opts.before / "evergreen/model/baselines.py")
    before = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(before)  # type: ignore[union-attr]
    ws = Workspace.open(str(opts.project))
    prep = load_candidate(ws.model).prep
    train, valid = (sample_rows(ParquetRows.of(split_pieces(ws, n)), opts.rows, 0) for n in ("train", "valid"))
    xy_train, xy_valid = ((prep.matrix(f), _actual(f, prep)) for f in (train, valid))
    for name, module in (("new", baselines), ("before", before), ("new", baselines)):
        began = time.perf_counter()
        fitted = module.fit_linear(prep, xy_train, xy_valid)
        penalty = getattr(fitted[-1], "alpha", None) or 1 / fitted[-1].C  # Ridge alpha, or 1 / C
        print(f"{name}: {time.perf_counter() - began:.1f} s, penalty {penalty:g}", flush=True)


if __name__ == "__main__":
    main()
