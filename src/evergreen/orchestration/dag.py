"""The DVC pipeline as seen by an orchestrator: stage order, up-to-date checks and running one stage.

The DAG is declared once, in `dvc.yaml`; this module reads it through DVC's own Python API (by way of
`evergreen.dvc_adapter`, the one module that imports DVC), so Prefect (or the backtest, or any other scheduler)
never holds a second list of stages, and DVC decides what is up to date.
Stages run in this process through `Repo.reproduce`, one repository object per run, rather than one
`dvc repro` subprocess per stage. DVC still runs each stage's command (`evergreen stage NAME`) as a child
process; that child copies its output to the file named by `STAGE_LOG_ENV`, which `run_stage` follows so
every line reaches the caller (the Prefect logs) while the stage runs. A stage whose command is not
`evergreen stage` still runs; its output goes to this process's terminal instead of the Prefect logs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import filelock
import networkx as nx

from evergreen.dvc_adapter import changed_stages, open_repo, reproduce_stage, stage_graph, tmp_dir
from evergreen.errors import DvcStageFailed, EvergreenError, StageFailed, WorkspaceBusy
from evergreen.orchestration.dvcfile import STAGE_LOG_ENV

if TYPE_CHECKING:
    from evergreen.dvc_adapter import Repo

__all__ = [
    "STAGE_LOG_ENV",
    "StageFailed",
    "WorkspaceBusy",
    "changed_stages",
    "open_repo",
    "pipeline_stages",
    "reproduce",
    "run_stage",
    "workspace_lock",
]

_TAIL_LINES = 30


def pipeline_stages(repo: Repo, targets: list[str] | None = None) -> list[str]:
    """Names of the pipeline's command stages in dependency order (upstream first).

    With `targets`, only those stages and what they depend on. Data-only `.dvc` files are not stages to run.
    """
    graph = stage_graph(repo)  # edges point from a stage to the stages it depends on
    if targets:
        unknown = [t for t in targets if t not in graph]
        if unknown:
            raise EvergreenError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has: {', '.join(graph)}")
        wanted = set().union(*({t, *nx.descendants(graph, t)} for t in targets))
        graph = graph.subgraph(wanted)
    ordered = reversed(list(nx.lexicographical_topological_sort(graph)))
    return [name for name in ordered if graph.nodes[name]["runs"]]


@contextmanager
def _following(path: Path, on_line: Callable[[str], None]) -> Iterator[list[str]]:
    """Pass each line appended to `path` to `on_line` while the block runs; yields the last lines seen."""
    tail: list[str] = []
    done = threading.Event()

    def follow() -> None:
        with path.open("r", errors="replace") as lines:
            pending = ""
            while True:
                finished = done.is_set()  # read once more after the stage ended, then stop
                chunk = lines.read()
                pending += chunk
                *complete, pending = pending.split("\n")
                for line in complete:
                    line = line.rstrip()
                    if line:
                        on_line(line)
                        tail[:] = [*tail[-_TAIL_LINES + 1 :], line]
                if finished:
                    if pending.strip():
                        on_line(pending.rstrip())
                        tail[:] = [*tail[-_TAIL_LINES + 1 :], pending.rstrip()]
                    return
                if not chunk:
                    done.wait(0.05)

    path.write_text("")
    reader = threading.Thread(target=follow, name="stage-output", daemon=True)
    reader.start()
    try:
        yield tail
    finally:
        done.set()
        reader.join()


def run_stage(repo: Repo, name: str, on_line: Callable[[str], None] = print) -> bool:
    """Bring one stage up to date through DVC's API, streaming the stage's output lines to `on_line`.

    Returns False when DVC found the stage up to date and skipped it; raises `StageFailed` with the stage's
    own error line when it failed.
    """
    log = tmp_dir(repo) / f"evergreen-stage-{name.replace('/', '_').replace(':', '_')}.log"
    previous = os.environ.get(STAGE_LOG_ENV)
    os.environ[STAGE_LOG_ENV] = str(log)  # DVC's child process inherits it
    try:
        with _following(log, on_line) as tail:
            try:
                ran = reproduce_stage(repo, name)
            except DvcStageFailed as exc:
                failure = exc
            else:
                failure = None
    finally:
        if previous is None:
            os.environ.pop(STAGE_LOG_ENV, None)
        else:
            os.environ[STAGE_LOG_ENV] = previous
    if failure is not None:
        errors = [line for line in tail if line.startswith("error:")]
        summary = errors[-1].removeprefix("error: ") if errors else str(failure) or "no output"
        raise StageFailed(f"stage '{name}' failed: {summary}\n" + "\n".join(tail))
    return ran


def reproduce(
    workspace: Path, targets: list[str] | None = None, on_line: Callable[[str], None] = print
) -> dict[str, str]:
    """Bring the pipeline (or `targets` and what they need) up to date without an orchestrator.

    The plain form of what the Prefect pipeline flow does task by task; returns {stage: ran|skipped}.
    """
    outcome: dict[str, str] = {}
    with open_repo(workspace) as repo:
        for name in pipeline_stages(repo, targets):
            outcome[name] = "ran" if run_stage(repo, name, on_line) else "skipped"
    return outcome


@contextmanager
def workspace_lock(lock_path: Path, wait: bool = True, timeout: float = -1) -> Iterator[None]:
    """Hold a workspace (its `Workspace.run_lock`) for one orchestrated run.

    With `wait=False`, raise `WorkspaceBusy` at once when another run holds it.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path))
    try:
        lock.acquire(timeout=timeout if wait else 0)
    except filelock.Timeout:
        raise WorkspaceBusy(f"another run holds this workspace (lock {lock_path})") from None
    try:
        yield
    finally:
        lock.release()
