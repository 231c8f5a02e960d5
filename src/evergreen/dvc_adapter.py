"""The one door to DVC: every call Evergreen makes into DVC goes through this module, and no other imports `dvc`.

DVC is driven two ways, each where it is the better fit. Its Python API (`dvc.repo.Repo`) runs the pipeline in
this process: the stage graph, what changed, reproducing one stage. Its command (`python -m dvc ...`, the DVC of
this environment) does what its API does not promise in a stable form: `dvc add`, `dvc push`, `dvc exp run`.

One private DVC method is replaced here (`_root_run_cache`), so the module checks the installed DVC against the
releases it was written and tested for (`SUPPORTED_DVC`, the pin in pyproject.toml) before it opens a
repository or runs a command, and refuses any other with a message naming both. `dvc` is imported inside the
functions: importing it costs most of a second and installs terminal log handlers, which commands that never
touch DVC (serving, monitoring) should not pay for.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import networkx as nx

from evergreen.errors import DvcCommandFailed, DvcStageFailed, DvcVersionUnsupported

if TYPE_CHECKING:
    from dvc.repo import Repo

__all__ = [
    "SUPPORTED_DVC",
    "DvcCommandFailed",
    "DvcStageFailed",
    "DvcVersionUnsupported",
    "add",
    "changed_stages",
    "check_version",
    "default_remote",
    "exp_run",
    "init_repo",
    "log_to",
    "open_repo",
    "push",
    "reproduce_stage",
    "stage_graph",
    "tmp_dir",
]

# the DVC releases this module was written and tested for: pyproject.toml pins the same range
SUPPORTED_DVC = ">=3.67,<3.68"
_LOWEST, _BEYOND = (3, 67), (3, 68)
_TAIL_LINES = 15


def check_version(installed: str) -> None:
    """Refuse a DVC release outside `SUPPORTED_DVC`, naming the installed and the supported versions."""
    match = re.match(r"(\d+)\.(\d+)", installed)
    if match is None or not _LOWEST <= (int(match[1]), int(match[2])) < _BEYOND:
        raise DvcVersionUnsupported(
            f"DVC {installed} is installed, but Evergreen's DVC adapter supports dvc{SUPPORTED_DVC} only "
            f"(it replaces a private DVC method checked against those releases): "
            f"pip install 'dvc{SUPPORTED_DVC}'"
        )


@functools.cache
def _require_supported() -> None:
    """`check_version` on the DVC of this environment, once per process (read without importing `dvc`)."""
    try:
        installed = importlib.metadata.version("dvc")
    except importlib.metadata.PackageNotFoundError:
        raise DvcVersionUnsupported(f"DVC is not installed: pip install 'dvc{SUPPORTED_DVC}'") from None
    check_version(installed)


# --- the Python API: one repository object per run --------------------------------------------------------------


@contextlib.contextmanager
def open_repo(workspace: Path) -> Iterator[Repo]:
    """The DVC repository at `workspace`, with the project's commands on PATH for DVC's child processes."""
    _require_supported()
    from dvc.repo import Repo

    bin_dir = str(Path(sys.executable).parent)  # where `evergreen` is installed, as `dvc repro` would find it
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    repo = Repo(str(workspace))
    _root_run_cache(repo)
    try:
        yield repo
    finally:
        repo.close()


def init_repo(root: Path) -> None:
    """`dvc init --no-scm` at `root`: a DVC repository that is not (or not yet) a git repository."""
    _require_supported()
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True).close()


def _root_run_cache(repo: Repo) -> None:
    """Make DVC's run cache work when this process's working directory is outside the repository.

    DVC builds its run-cache stages at the relative path `dvc.yaml` (the `dvc` command always runs inside the
    repository); from elsewhere saving a stage fails with "outside of DVC repo". DVC 3.67 has no public way to
    root them (`reproduce(run_cache=False)` only skips restoring; saving still builds the relative stage), and
    changing the working directory would move it for every thread of the Prefect flow and the backtest. So
    this is DVC's own `StageCache._create_stage` with an absolute path, set on this one repository object, for
    the releases `check_version` accepts; `tests/unit/test_dag_runner.py` runs a stage from outside its
    repository, so a DVC release that changes this method fails there first.
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


def _address(repo: Repo, stage) -> str:
    """A stage's name as `dvc.yaml` declares it: the same wherever this process's working directory is."""
    where = os.path.relpath(stage.path, repo.root_dir)
    name = getattr(stage, "name", None)
    if name is None:  # a `.dvc` file (a landing file's pointer): data, not a command to run
        return where
    return name if where == "dvc.yaml" else f"{where}:{name}"


def stage_graph(repo: Repo) -> nx.DiGraph:
    """DVC's stage graph by name: an edge points from a stage to one it depends on; `runs` marks command stages.

    Data-only nodes (`.dvc` pointers) stay in the graph, so a stage's upstream is complete, with `runs=False`.
    """
    graph = repo.index.graph
    named = nx.relabel_nodes(graph, {stage: _address(repo, stage) for stage in graph.nodes})
    nx.set_node_attributes(named, {_address(repo, s): bool(getattr(s, "cmd", None)) for s in graph.nodes}, "runs")
    return named


def changed_stages(repo: Repo) -> set[str]:
    """Stages DVC would run now: their deps, params or outs differ from what `dvc.lock` recorded.

    One check for the whole DAG up front is enough: a stage unchanged now stays unchanged unless a stage
    upstream of it runs, and `reproduce_stage` lets DVC re-check everything after that.
    """
    with repo.lock:
        return {_address(repo, s) for s in repo.index.stages if getattr(s, "cmd", None) and s.changed()}


def reproduce_stage(repo: Repo, name: str) -> bool:
    """Bring one stage up to date (`dvc repro --single-item NAME`); False when DVC found it up to date.

    The target is an absolute `dvc.yaml` path, so DVC resolves it without the working directory.
    """
    from dvc.exceptions import DvcException

    target = os.path.join(repo.root_dir, name if ":" in name else f"dvc.yaml:{name}")
    try:
        return bool(repo.reproduce(target, single_item=True))
    except DvcException as exc:
        raise DvcStageFailed(str(exc)) from exc


def tmp_dir(repo: Repo) -> Path:
    """The repository's scratch folder (`.dvc/tmp`): untracked, and ignored by git and DVC."""
    return Path(repo.tmp_dir)


@contextlib.contextmanager
def log_to(stream: TextIO) -> Iterator[None]:
    """Send DVC's own log messages to `stream` instead of the terminal while the block runs.

    `import dvc` installs handlers that print to the terminal; it is imported first here, so its handlers
    are in place (and bound to the real terminal) before they are set aside, and come back afterwards.
    """
    import dvc  # noqa: F401 -- its import sets up the handlers this block replaces

    dvc_logger = logging.getLogger("dvc")
    handlers = dvc_logger.handlers[:]
    dvc_logger.handlers = [logging.StreamHandler(stream)]
    try:
        yield
    finally:
        dvc_logger.handlers = handlers


# --- the `dvc` command -------------------------------------------------------------------------------------------


def _command(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m dvc ARGS` in `root`, with this environment's commands on PATH (dvc.yaml's `evergreen stage`)."""
    _require_supported()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)


def _checked(root: Path, *args: str) -> str:
    """`_command`, raising `DvcCommandFailed` with the command's last lines when it fails; its output."""
    done = _command(root, *args)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise DvcCommandFailed(f"`dvc {' '.join(args)}` failed in {root} (exit {done.returncode}):\n{tail}")
    return done.stdout


def add(root: Path, targets: list[str]) -> None:
    """`dvc add` each of `targets` (paths relative to `root`): each gets its own `.dvc` pointer."""
    _checked(root, "add", *targets)


def default_remote(root: Path) -> str | None:
    """The name of the repository's default DVC remote, or None when none is configured."""
    done = _command(root, "remote", "default")
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def push(root: Path) -> None:
    """`dvc push` the cache to the default remote."""
    _checked(root, "push")


def exp_run(root: Path, name: str, params: dict[str, str], targets: tuple[str, ...]) -> str:
    """`dvc exp run --temp --single-item --name NAME -S key=value ... TARGETS`; DVC's output.

    `--temp` runs in a copy under `.dvc/tmp`, so the workspace (params.yaml, models/) is left as it was;
    `--single-item` runs only `targets`, on the outputs upstream stages already made.
    """
    sets = [arg for key, value in params.items() for arg in ("-S", f"{key}={value}")]
    return _checked(root, "exp", "run", "--temp", "--single-item", "--name", name, *sets, *targets)
