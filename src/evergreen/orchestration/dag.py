"""The DVC pipeline as seen by an orchestrator: stage order, up-to-date checks and running one stage.

The DAG is declared once, in `dvc.yaml`; this module reads it through DVC's own Python API, so Prefect (or the
backtest, or any other scheduler) never holds a second list of stages, and DVC decides what is up to date.
Stages run in this process through `Repo.reproduce`, one repository object per run, rather than one
`dvc repro` subprocess per stage. DVC still runs each stage's command (`evergreen stage NAME`) as a child
process; that child copies its output to the file named by `STAGE_LOG_ENV`, which `run_stage` follows so
every line reaches the caller (the Prefect logs) while the stage runs. A stage whose command is not
`evergreen stage` still runs; its output goes to this process's terminal instead of the Prefect logs.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
import networkx as nx
from dvc.exceptions import DvcException
from dvc.repo import Repo

from evergreen.errors import EvergreenError
from evergreen.orchestration.dvcfile import STAGE_LOG_ENV

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


class StageFailed(EvergreenError):
    """A DVC stage failed; the message carries the stage's own last lines of output."""


class WorkspaceBusy(EvergreenError):
    """Another orchestrated run holds this workspace (DVC allows one `repro` per workspace at a time)."""


@contextmanager
def open_repo(workspace: Path) -> Iterator[Repo]:
    """The DVC repository at `workspace`, with the project's commands on PATH for DVC's child processes."""
    bin_dir = str(Path(sys.executable).parent)  # where `evergreen` is installed, as `dvc repro` would find it
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    repo = Repo(str(workspace))
    _root_run_cache(repo)
    try:
        yield repo
    finally:
        repo.close()


def _address(repo: Repo, stage) -> str:
    """A stage's name as `dvc.yaml` declares it: the same wherever this process's working directory is."""
    where = os.path.relpath(stage.path, repo.root_dir)
    name = getattr(stage, "name", None)
    if name is None:  # a `.dvc` file (a landing file's pointer): data, not a command to run
        return where
    return name if where == "dvc.yaml" else f"{where}:{name}"


def _target(repo: Repo, name: str) -> str:
    """`name` as a target DVC resolves without the working directory (an absolute `dvc.yaml` path)."""
    return os.path.join(repo.root_dir, name if ":" in name else f"dvc.yaml:{name}")


def _root_run_cache(repo: Repo) -> None:
    """Make DVC's run cache work when this process's working directory is outside the repository.

    DVC builds its run-cache stages at the relative path `dvc.yaml` (the `dvc` command always runs inside the
    repository); from elsewhere saving a stage fails with "outside of DVC repo". This is DVC 3.x's own
    `StageCache._create_stage` with an absolute path, set on this one repository object; without it the Prefect
    flow and the backtest would have to change the working directory. `tests/unit/test_dag_runner.py` runs a
    stage from outside its repository, so a DVC release that changes this method fails there first.
    """
    from dvc.stage import PipelineStage, create_stage
    from dvc.stage.loader import StageLoader

    def rooted(cache: dict, wdir: str | None = None) -> PipelineStage:
        outs = [out["path"] for out in cache["outs"]]
        path = os.path.join(repo.root_dir, "dvc.yaml")
        stage = create_stage(PipelineStage, repo=repo, path=path, cmd=cache["cmd"], wdir=wdir, outs=outs)
        StageLoader.fill_from_lock(stage, cache)
        return stage

    repo.stage_cache._create_stage = rooted


def pipeline_stages(repo: Repo, targets: list[str] | None = None) -> list[str]:
    """Names of the pipeline's command stages in dependency order (upstream first).

    With `targets`, only those stages and what they depend on. Data-only `.dvc` files are not stages to run.
    """
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    by_name = {_address(repo, stage): stage for stage in graph.nodes}
    if targets:
        unknown = [t for t in targets if t not in by_name]
        if unknown:
            raise EvergreenError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has: {', '.join(by_name)}")
        wanted = set().union(*({by_name[t], *nx.descendants(graph, by_name[t])} for t in targets))
        graph = graph.subgraph(wanted)
    ordered = reversed(list(nx.lexicographical_topological_sort(graph, key=lambda s: _address(repo, s))))
    return [_address(repo, stage) for stage in ordered if getattr(stage, "cmd", None)]


def changed_stages(repo: Repo) -> set[str]:
    """Stages DVC would run now: their deps, params or outs differ from what `dvc.lock` recorded.

    One check for the whole DAG up front is enough: a stage unchanged now stays unchanged unless a stage
    upstream of it runs, and `run_stage` lets DVC re-check everything after that.
    """
    with repo.lock:
        return {_address(repo, s) for s in repo.index.stages if getattr(s, "cmd", None) and s.changed()}


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
    log = Path(repo.tmp_dir) / f"evergreen-stage-{name.replace('/', '_').replace(':', '_')}.log"
    previous = os.environ.get(STAGE_LOG_ENV)
    os.environ[STAGE_LOG_ENV] = str(log)  # DVC's child process inherits it
    try:
        with _following(log, on_line) as tail:
            try:
                ran = repo.reproduce(_target(repo, name), single_item=True)
            except DvcException as exc:
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
    return bool(ran)


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
