"""Real processes started together, for the tests of what two runs at once do (monitor, shadow checks).

A Python process spends seconds importing the project, and the import time varies more than the race being
tested lasts: started one after the other, two runs mostly take turns. `run_together` starts the processes,
lets each import what `setup` imports, and only then lets them all run `action` at the same moment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import ROOT, wait_until

_CHILD = """
import sys, time
from pathlib import Path
{setup}
_ready, _go = Path(sys.argv[-2]), Path(sys.argv[-1])
_ready.touch()
while not _go.exists():
    time.sleep(0.002)
sys.argv = sys.argv[:-2]
{action}
"""


def run_together(
    setup: str, action: str, args: list[str], folder: Path, copies: int = 2, timeout: float = 300
) -> list[tuple[int, str]]:
    """Run `copies` Python processes of `setup` then `action` (code; `sys.argv[1:]` is `args`), the actions
    started at once; returns each process's (exit status, stdout and stderr). `folder` holds the barrier files."""
    folder.mkdir(parents=True, exist_ok=True)
    go = folder / f"go-{time.monotonic_ns()}"
    ready = [folder / f"{go.name}-ready-{i}" for i in range(copies)]
    code = _CHILD.format(setup=setup, action=action)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args, str(mark), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for mark in ready
    ]
    try:
        wait_until(  # or until one died while importing: its output says why
            lambda: all(mark.exists() for mark in ready) or any(run.poll() is not None for run in runs),
            timeout,
            f"{copies} processes to import their setup",
            interval=0.01,
        )
        go.touch()
        outputs = [run.communicate(timeout=timeout)[0] for run in runs]
        return [(run.returncode, out) for run, out in zip(runs, outputs, strict=True)]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
