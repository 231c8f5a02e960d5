"""After a retrain: record the outcome, and make a promoted champion rebuildable from git plus DVC.

When the workspace is a git repository, a promotion commits `dvc.lock`, the landing files' DVC pointers and
`params.yaml` (only those paths) and pushes the data to the DVC remote, so
`git checkout <commit> && dvc pull && dvc repro` rebuilds that champion. The commit is written into the
version's model card.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from evergreen import dvc_adapter
from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.reports import PromotionReport
from evergreen.errors import PromotionNotCommitted
from evergreen.registry.store import Registry

DRIFT_EVENT = "evergreen.drift.detected"


COMMITTED_PATHS = ("dvc.lock", "params.yaml", "data/incoming")  # the folder: its files' .dvc pointers


def workspace_resource(root: Path) -> dict[str, str]:
    """The Prefect event resource naming one workspace, so a trigger reacts to its own workspace only."""
    return {"prefect.resource.id": f"evergreen.workspace.{root.resolve()}", "prefect.resource.name": root.name}


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def is_git_repository(root: Path) -> bool:
    return _git(root, "rev-parse", "--is-inside-work-tree").stdout.strip() == "true"


def commit_promotion(root: Path, version: str, reasons: list[str]) -> str | None:
    """Commit the files that pin this champion's data and params; returns the commit, or None outside git."""
    if not is_git_repository(root):
        return None
    paths = [p for p in COMMITTED_PATHS if (root / p).exists()]
    _git(root, "add", "--", *paths)
    message = f"evergreen: promote {version}\n\n" + "\n".join(f"- {reason}" for reason in reasons)
    done = _git(root, "commit", "-m", message, "--", *paths)
    if done.returncode != 0 and "nothing to commit" not in done.stdout + done.stderr:
        # the model is promoted already; a commit that cannot be made is reported, not a reason to fail
        raise PromotionNotCommitted(f"git commit of the promotion failed: {(done.stderr or done.stdout).strip()}")
    return _git(root, "rev-parse", "HEAD").stdout.strip()


def push_data(root: Path) -> str:
    """`dvc push` to the default remote, when one is configured; returns what happened."""
    remote = dvc_adapter.default_remote(root)
    if remote is None:
        return "no DVC remote configured: data not pushed"
    dvc_adapter.push(root)
    return f"pushed to DVC remote {remote}"


def promotion_outcome(path: Path) -> PromotionReport:
    """The promote stage's outcome (`Workspace.promotion_metrics`); "no promotion ran" when it is missing."""
    return PromotionReport.read_if_exists(path) or PromotionReport(promoted=False, reasons=["no promotion ran"])


def record_commit(registry: Registry, version: str, commit: str | None, pushed: str) -> None:
    """Write the commit that pins this champion into its model card (the card's last two fields)."""
    registry.annotate(version, ModelCard(git_commit=commit, data_push=pushed).to_dict())
