"""The in-process DAG runner on a tiny real DVC project, run from outside the project's folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from evergreen.errors import StageFailed
from evergreen.orchestration.dag import reproduce

# each stage command copies its output lines to the file the runner names in EVERGREEN_STAGE_LOG, as
# `evergreen stage` does
STAGE_SCRIPT = """\
import os, sys

name = sys.argv[1]
with open(os.environ["EVERGREEN_STAGE_LOG"], "a") as log:
    if os.path.exists("fail-" + name):
        log.write("error: " + name + " cannot work\\n")
        sys.exit(3)
    log.write("made " + name + "\\n")
source = open(sys.argv[2]).read() if len(sys.argv) > 2 else "1"
open(name + ".txt", "w").write(source * 2 if len(sys.argv) > 2 else source)
"""
DVC_YAML = """\
stages:
  first:
    cmd: {python} stage.py first
    deps: [stage.py]
    outs: [first.txt]
  second:
    cmd: {python} stage.py second first.txt
    deps: [stage.py, first.txt]
    outs: [second.txt]
"""


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    Repo.init(str(root), no_scm=True).close()
    (root / "stage.py").write_text(STAGE_SCRIPT)
    (root / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    (root / "arrival.csv").write_text("a,b\n1,2\n")
    with Repo(str(root)) as repo:
        repo.add(str(root / "arrival.csv"))  # a landing file's pointer: a data-only node in DVC's graph
    return root


def test_stages_run_in_order_stream_their_output_and_skip_when_up_to_date(tiny_repo: Path) -> None:
    assert Path.cwd() != tiny_repo  # the runner must not depend on the working directory
    lines: list[str] = []
    assert reproduce(tiny_repo, on_line=lines.append) == {"first": "ran", "second": "ran"}
    assert (tiny_repo / "second.txt").read_text() == "11"
    assert "made first" in lines and "made second" in lines  # the stages' own output reached the caller
    assert (tiny_repo / "dvc.lock").is_file()
    assert reproduce(tiny_repo, on_line=lines.append) == {"first": "skipped", "second": "skipped"}


def test_a_failing_stage_raises_with_its_own_error_line(tiny_repo: Path) -> None:
    (tiny_repo / "fail-second").touch()
    with pytest.raises(StageFailed, match="stage 'second' failed: second cannot work"):
        reproduce(tiny_repo, on_line=lambda _: None)
    assert (tiny_repo / "first.txt").is_file() and not (tiny_repo / "second.txt").exists()
    assert os.environ.get("EVERGREEN_STAGE_LOG") is None  # the runner leaves the environment as it found it
