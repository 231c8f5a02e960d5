"""The DVC pipeline as seen by an orchestrator: stage order, up-to-date checks and running one stage.

The DAG is declared once, in `dvc.yaml`; this module only reads it through DVC's own API, so Prefect (or any
other scheduler) never holds a second list of stages. DVC decides what is up to date.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
import networkx as nx
from dvc.repo import Repo

from evergreen.errors import EvergreenError

_TAIL_LINES = 30


class StageFailed(EvergreenError):
    """A DVC stage exited non-zero; the message carries the stage's own last lines of output."""


class WorkspaceBusy(EvergreenError):
    """Another orchestrated run holds this workspace (DVC allows one `repro` per workspace at a time)."""


def pipeline_stages(workspace: Path, targets: list[str] | None = None) -> list[str]:
    """Names of the pipeline's command stages in dependency order (upstream first).

    With `targets`, only those stages and what they depend on. Data-only `.dvc` files are not stages to run.
    """
    repo = Repo(str(workspace))
    try:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        by_name = {stage.addressing: stage for stage in graph.nodes}
        if targets:
            unknown = [t for t in targets if t not in by_name]
            if unknown:
                raise EvergreenError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has: {', '.join(by_name)}")
            wanted = set().union(*({by_name[t], *nx.descendants(graph, by_name[t])} for t in targets))
            graph = graph.subgraph(wanted)
        ordered = reversed(list(nx.lexicographical_topological_sort(graph, key=lambda s: s.addressing)))
        return [stage.addressing for stage in ordered if getattr(stage, "cmd", None)]
    finally:
        repo.close()


def changed_stages(workspace: Path) -> set[str]:
    """Stages DVC would run now: their deps, params or outs differ from what `dvc.lock` recorded.

    One check for the whole DAG up front is enough: a stage unchanged now stays unchanged unless a stage
    upstream of it runs, and `run_stage` lets DVC re-check everything after that.
    """
    repo = Repo(str(workspace))
    try:
        with repo.lock:
            return {s.addressing for s in repo.index.stages if getattr(s, "cmd", None) and s.changed()}
    finally:
        repo.close()


def run_stage(workspace: Path, name: str, on_line: Callable[[str], None] = print) -> bool:
    """Run one stage with `dvc repro --single-item`, streaming its output line by line to `on_line`.

    Returns False when DVC found the stage up to date and skipped it.
    """
    command = [str(Path(sys.executable).parent / "dvc"), "repro", "--single-item", name]
    tail: list[str] = []
    with subprocess.Popen(
        command, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line:
                on_line(line)
                tail = [*tail[-_TAIL_LINES + 1 :], line]
    if process.returncode != 0:
        errors = [line for line in tail if line.startswith("error:")]
        summary = errors[-1].removeprefix("error: ") if errors else tail[-1] if tail else "no output"
        raise StageFailed(f"stage '{name}' failed: {summary}\n" + "\n".join(tail))
    return not any(line == f"Stage '{name}' didn't change, skipping" for line in tail)


@contextmanager
def workspace_lock(workspace: Path, wait: bool = True, timeout: float = -1) -> Iterator[None]:
    """Hold the workspace for one orchestrated run. With `wait=False`, raise `WorkspaceBusy` at once."""
    lock_path = workspace / ".dvc" / "tmp" / "evergreen-run.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path))
    try:
        lock.acquire(timeout=timeout if wait else 0)
    except filelock.Timeout:
        raise WorkspaceBusy(f"another run holds {workspace} (lock {lock_path})") from None
    try:
        yield
    finally:
        lock.release()
