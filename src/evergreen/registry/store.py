"""The model registry: persistent versions `v1`, `v2`, ... and one pointer naming the champion.

Atomicity is the point of this module:
- a version is written completely into a hidden temporary folder, then renamed into place in one step, so a
  reader never sees half a version;
- the champion pointer (`CHAMPION`, a one-line file) is replaced with `os.replace`, so it always names a
  complete version; a crash mid-promotion leaves the old champion serving.
Every promotion and rollback is appended to `history.jsonl`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import filelock

from evergreen.errors import EvergreenError

CHAMPION = "CHAMPION"
HISTORY = "history.jsonl"
CARD = "model_card.json"
_VERSION = re.compile(r"^v(\d+)$")


class RegistryError(EvergreenError):
    """A registry operation that cannot be done: unknown version, nothing to roll back to, ..."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Registry:
    """A folder of model versions with an atomic champion pointer."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _lock(self) -> filelock.FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(self.root / ".lock"))

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.root.exists():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def champion(self) -> str | None:
        """The version the service should serve, or None before the first promotion."""
        pointer = self.root / CHAMPION
        return pointer.read_text().strip() or None if pointer.exists() else None

    def path(self, version: str) -> Path:
        """The folder of a complete version; `RegistryError` when there is no such version."""
        folder = self.root / version
        if not _VERSION.match(version) or not folder.is_dir():
            known = ", ".join(self.versions()) or "none yet"
            raise RegistryError(f"no model version {version!r} in {self.root} (versions: {known})")
        return folder

    def card(self, version: str) -> dict[str, Any]:
        return json.loads((self.path(version) / CARD).read_text())

    def add(self, files: dict[str, Path], card: dict[str, Any]) -> str:
        """Copy `files` (name in the version -> source path) and the card in as the next version."""
        with self._lock():
            numbers = [int(v[1:]) for v in self.versions()]
            version = f"v{max(numbers, default=0) + 1}"
            staging = self.root / f".staging-{version}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                for name, source in files.items():
                    shutil.copy2(source, staging / name)
                card = {**card, "version": version, "registered_at": dt.datetime.now(dt.UTC).isoformat()}
                (staging / CARD).write_text(json.dumps(card, indent=2, default=str) + "\n")
                for item in staging.iterdir():
                    with item.open("rb") as handle:
                        os.fsync(handle.fileno())
                os.rename(staging, self.root / version)  # the version appears whole, or not at all
                _fsync_dir(self.root)
            finally:
                if staging.exists():
                    shutil.rmtree(staging)
        return version

    def promote(self, version: str, reason: str) -> None:
        """Make `version` the champion in one atomic step, and record why."""
        with self._lock():
            self.path(version)
            previous = self.champion()
            _write_atomic(self.root / CHAMPION, version + "\n")
            self._record({"event": "promote", "version": version, "previous": previous, "reason": reason})

    def annotate(self, version: str, fields: dict[str, Any]) -> None:
        """Add fields to a version's model card (replaced atomically, like everything here)."""
        with self._lock():
            card = {**self.card(version), **fields}
            _write_atomic(self.path(version) / CARD, json.dumps(card, indent=2, default=str) + "\n")

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def rollback(self) -> str:
        """Make the champion before the current one the champion again; returns that version."""
        with self._lock():
            current = self.champion()
            if current is None:
                raise RegistryError(f"nothing to roll back: {self.root} has no champion yet")
            # champions form a stack: a promotion pushes, a rollback pops back to the one before
            stack: list[str] = []
            for event in self.history():
                if event["event"] == "promote":
                    stack.append(event["version"])
                elif event["event"] == "rollback" and stack:
                    stack.pop()
            if len(stack) < 2:
                raise RegistryError(f"nothing to roll back to: {current} is the first champion in {self.root}")
            target = stack[-2]
            self.path(target)
            _write_atomic(self.root / CHAMPION, target + "\n")
            self._record({"event": "rollback", "version": target, "previous": current, "reason": "rollback"})
        return target

    def _record(self, entry: dict[str, Any]) -> None:
        entry = {"time": dt.datetime.now(dt.UTC).isoformat(), **entry}
        with (self.root / HISTORY).open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
