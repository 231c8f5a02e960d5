#!/usr/bin/env python3
"""Set up the project and run its main jobs with nothing but Python 3.11+ and git.

    python3 dev.py run     # create .venv, install Evergreen, run `dvc repro` on the bundled data
    python3 dev.py test    # create .venv, install Evergreen with its test tools, run the test suite (the fast
                           # tests on both cores with pytest-xdist, then the slow ones one at a time)
    python3 dev.py setup   # only create/refresh .venv

The virtual environment is reused; the install step reruns only when pyproject.toml changed.
Extra arguments go to the underlying command: `python3 dev.py test -m "not slow"`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".evergreen-installed"


def _say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def _run(*args: str | Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(VENV)}
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def setup() -> None:
    """Create `.venv` when missing and install the project (editable, with dev tools) when it changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py itself runs on whatever python3 is
        sys.exit(f"Evergreen needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        _say(f"creating {VENV}")
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    _say("installing evergreen-ml and its dependencies into .venv (first time: a few minutes)")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(wanted)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("run", "test", "setup"):
        sys.exit(__doc__)
    command, extra = argv[0], argv[1:]
    setup()
    if command == "run":
        decision = ROOT / "metrics" / "promotion.json"
        before = decision.stat().st_mtime_ns if decision.exists() else None
        _run(BIN / "dvc", "repro", *extra)
        # the promote stage ends with the closing summary (leaderboard, promotion, next command); when it did
        # not run (everything up to date), print that summary here, once, rather than `dvc metrics show`'s table
        if not decision.exists() or decision.stat().st_mtime_ns == before:
            _run(BIN / "evergreen", "summary")
    elif command == "test" and extra:
        _run(BIN / "python", "-m", "pytest", *extra)
    elif command == "test":
        # the whole suite: the fast tests on both cores, then the slow ones two files at a time (each file on
        # one worker, so its module fixtures are built once): they spend about half their time waiting on
        # servers, flows and subprocesses: 28 minutes on 2 cores, where one at a time had taken 40 to 48
        _run(BIN / "python", "-m", "pytest", "-m", "not slow", "-n", "2")
        _run(BIN / "python", "-m", "pytest", "-m", "slow", "-n", "2", "--dist", "loadfile")


if __name__ == "__main__":
    main(sys.argv[1:])
