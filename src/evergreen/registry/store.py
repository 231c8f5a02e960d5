"""The model registry: persistent versions `v1`, `v2`, ... and one pointer naming the champion.

Atomicity is the point of this module:
- a version is written completely into a hidden temporary folder, then renamed into place in one step, so a
  reader never sees half a version; its card records the SHA-256 of each file, so damage done later is seen;
- the champion pointer (`CHAMPION`, a one-line file) is replaced with `os.replace`, so it always names a
  complete version; a crash mid-promotion leaves the old champion serving;
- a challenger that passed the offline gate may first serve in the shadow (`SHADOW`, a pointer like
  `CHAMPION`, absent when there is none): scored on live traffic beside the champion, never answering;
- a version becomes the champion (by hand, by the gate or by a rollback) only after its files match their
  recorded hashes and the caller's `verify` (e.g. loading the ONNX graph and checking its signature) passed;
- every write first removes what a killed writer left behind (hidden staging folders, `.*.tmp` files, a torn
  last line of the history), and registering a `model.onnx` identical to an existing version's returns that
  version instead of minting a byte-identical twin.
Every change of champion is appended to `history.jsonl`; rollback walks that history back to the previous
*different* champion. A damaged pointer, card or history is a `RegistryError` naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from evergreen.data.io import publish, read_json
from evergreen.errors import RegistryError

__all__ = [
    "CARD",
    "CHAMPION",
    "FILES_REMOVED",
    "FILES_SHA256",
    "HISTORY",
    "MODEL_FILE",
    "SHADOW",
    "Registry",
    "RegistryError",
    "Verify",
]

CHAMPION = "CHAMPION"
SHADOW = "SHADOW"
HISTORY = "history.jsonl"
CARD = "model_card.json"
MODEL_FILE = "model.onnx"  # the file whose bytes identify a version (two versions never share them)
FILES_SHA256 = "files_sha256"  # card key: {file name: SHA-256 hex} recorded when the version was registered
FILES_REMOVED = "files_removed"  # card key: {"at": time, "keep_versions": N} once retention removed its files
_VERSION = re.compile(r"^v(\d+)$")
_STAGING = ".staging-"
_EVENTS = ("promote", "rollback", "shadow", "end_shadow")

Verify = Callable[[Path, str], object]
"""Called as `verify(version_folder, version)` before a version becomes the champion; raises when unusable."""


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
    publish(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Registry:
    """A folder of model versions with an atomic champion pointer.

    Reading (`versions`, `champion`, `path`, `card`, `history`) never writes. Each write (`add`, `promote`,
    `rollback`, `annotate`) holds the registry's file lock and starts by cleaning up after killed writers.

    `keep_versions` (`promote.keep_versions`): after each promotion, only the newest N versions, the champion,
    the shadow and the fallback keep their files (`prune`); the others keep their card, so the history reads.
    """

    def __init__(self, root: Path | str, keep_versions: int | None = None):
        self.root = Path(root)
        self.keep_versions = keep_versions

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self.root / ".lock")):
            self._clean_leftovers()
            yield

    # ------------------------------------------------------------------------------------------------ reads
    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.root.exists():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def champion(self) -> str | None:
        """The version the service should serve, or None before the first promotion.

        A pointer that does not hold one version name (random bytes, an empty file) is a `RegistryError`.
        """
        return self._pointer(CHAMPION, "make a version the champion again with `evergreen models promote VERSION`")

    def shadow(self) -> str | None:
        """The version scored in the shadow of the champion, or None when there is none."""
        return self._pointer(SHADOW, f"remove {self.root / SHADOW} to serve without a shadow")

    def _pointer(self, name: str, repair: str) -> str | None:
        pointer = self.root / name
        try:
            payload = pointer.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"{pointer}: cannot be read ({exc.strerror or exc})") from None
        try:
            version = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            version = ""
        if not _VERSION.match(version):
            raise RegistryError(
                f"{pointer} is damaged: it should hold one version name such as 'v3', found {payload[:40]!r}; " + repair
            )
        return version

    def path(self, version: str) -> Path:
        """The folder of a complete version; `RegistryError` when there is no such version."""
        folder = self.root / version
        if not _VERSION.match(version) or not folder.is_dir():
            known = ", ".join(self.versions()) or "none yet"
            raise RegistryError(f"no model version {version!r} in {self.root} (versions: {known})")
        return folder

    def card(self, version: str) -> dict[str, Any]:
        """A version's model card; a damaged card is a `RegistryError` naming the file."""
        path = self.path(version) / CARD
        card = read_json(path, RegistryError, subject="the model card is ", missing="the model card is missing")
        if not isinstance(card, dict):
            raise RegistryError(f"{path}: the model card should be a JSON object, found {type(card).__name__}")
        return card

    def history(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first.

        A torn last line (a writer killed mid-append) is skipped; any other unreadable line is a
        `RegistryError` naming the file and line.
        """
        path = self.root / HISTORY
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RegistryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        lines = payload.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline, as every complete append does
        events = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                events.append(_parse_event(path, number, line))
        if torn.strip():
            with contextlib.suppress(RegistryError):  # a half-written last line: that event never happened
                events.append(_parse_event(path, len(lines) + 1, torn))
        return events

    # ----------------------------------------------------------------------------------------------- writes
    def add(self, files: dict[str, Path], card: dict[str, Any]) -> str:
        """Copy `files` (name in the version -> source path) and the card in as the next version.

        When `files` has a `model.onnx` byte-identical to an existing version's, nothing is written and that
        version is returned (a rerun after a crash between registering and promoting adds no twin).
        """
        with self._writing():
            digests = {name: _sha256(Path(source)) for name, source in files.items()}
            if MODEL_FILE in digests:
                twin = self._find_model(digests[MODEL_FILE], Path(files[MODEL_FILE]).stat().st_size)
                if twin is not None:
                    return twin
            numbers = [int(v[1:]) for v in self.versions()]
            version = f"v{max(numbers, default=0) + 1}"
            staging = self.root / f"{_STAGING}{version}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                for name, source in files.items():
                    shutil.copy2(source, staging / name)
                card = {
                    **card,
                    "version": version,
                    "registered_at": dt.datetime.now(dt.UTC).isoformat(),
                    FILES_SHA256: digests,
                }
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

    def promote(self, version: str, reason: str, verify: Verify | None = None) -> bool:
        """Make `version` the champion in one atomic step, and record why.

        The version's files must match the hashes recorded when it was registered, and `verify(folder,
        version)` (when given) must return without raising; otherwise `RegistryError` names what is wrong and
        the champion stays as it was. Returns False, changing and recording nothing, when `version` is already
        the champion. A damaged `CHAMPION` file is replaced.
        """
        with self._writing():
            folder = self.path(version)
            try:
                previous = self.champion()
            except RegistryError:
                previous = None  # a damaged pointer: promoting by hand is how it is repaired
            if previous == version:
                return False
            self._verify(version, folder, verify, f"cannot make {version} the champion")
            _write_atomic(self.root / CHAMPION, version + "\n")
            self._record({"event": "promote", "version": version, "previous": previous, "reason": reason})
            if self.keep_versions is not None:
                self._prune(self.keep_versions)
        return True

    def prune(self, keep: int) -> list[str]:
        """Remove the files of every version but the newest `keep`, the champion, the shadow and the fallback
        (the champion before the current one, which a rollback or the service's fallback returns to). Their
        cards stay, marked `files_removed`; such a version can no longer serve. Returns the versions pruned now.
        """
        with self._writing():
            return self._prune(keep)

    def set_shadow(self, version: str, reason: str, verify: Verify | None = None) -> None:
        """Put `version` in the shadow (verified like `promote`), replacing any shadow there; recorded, and a
        replaced shadow's end with it (outcome "replaced")."""
        with self._writing():
            folder = self.path(version)
            if version == self.champion():
                raise RegistryError(f"{version} is the champion: it cannot also be its own shadow")
            self._verify(version, folder, verify, f"cannot put {version} in the shadow")
            try:
                previous = self.shadow()
            except RegistryError:
                previous = None  # a damaged pointer is repaired by replacing it
            _write_atomic(self.root / SHADOW, version + "\n")
            self._record({"event": "shadow", "version": version, "previous": previous, "reason": reason})
            if previous is not None and previous != version:
                # the one it replaced never gets a verdict: its end is recorded, so the history says why
                self._record(
                    {
                        "event": "end_shadow",
                        "version": previous,
                        "outcome": "replaced",
                        "reason": f"{version} replaced it",
                    }
                )

    def end_shadow(self, version: str, outcome: str, reason: str) -> None:
        """Take `version` out of the shadow: `outcome` is "promoted" or "discarded" (recorded with `reason`).

        A shadow that is no longer `version` (replaced meanwhile) is left alone; the event is still recorded.
        """
        with self._writing():
            try:
                current = self.shadow()
            except RegistryError:
                current = version  # a damaged pointer names no shadow worth keeping
            if current == version:
                (self.root / SHADOW).unlink()
                _fsync_dir(self.root)
            self._record({"event": "end_shadow", "version": version, "outcome": outcome, "reason": reason})

    def rollback(self, verify: Verify | None = None) -> str:
        """Make the previous *different* champion the champion again (verified like `promote`); returns it."""
        with self._writing():
            current = self.champion()
            if current is None:
                raise RegistryError(f"nothing to roll back: {self.root} has no champion yet")
            stack = _champion_stack(self.history(), current)
            if len(stack) < 2:
                raise RegistryError(f"nothing to roll back to: {current} is the first champion in {self.root}")
            target = stack[-2]
            self._verify(target, self.path(target), verify, f"cannot roll back to {target}")
            _write_atomic(self.root / CHAMPION, target + "\n")
            self._record({"event": "rollback", "version": target, "previous": current, "reason": "rollback"})
        return target

    def annotate(self, version: str, fields: dict[str, Any]) -> None:
        """Add fields to a version's model card (replaced atomically, like everything here)."""
        with self._writing():
            card = {**self.card(version), **fields}
            _write_atomic(self.path(version) / CARD, json.dumps(card, indent=2, default=str) + "\n")

    def clean(self) -> list[Path]:
        """Remove what killed writers left behind; returns the removed paths (every write does this first)."""
        if not self.root.is_dir():
            return []
        with filelock.FileLock(str(self.root / ".lock")):
            return self._clean_leftovers()

    # ---------------------------------------------------------------------------------------------- helpers
    def _prune(self, keep: int) -> list[str]:
        # called with the lock held
        versions = self.versions()
        kept = set(versions[-keep:])
        champion = self.champion()
        if champion is not None:
            stack = _champion_stack(self.history(), champion)
            kept |= set(stack[-2:])  # the champion and its fallback
        with contextlib.suppress(RegistryError):  # a damaged shadow pointer protects nothing
            kept |= {self.shadow()} - {None}
        pruned = []
        for version in versions:
            folder = self.root / version
            if version in kept or FILES_REMOVED in self.card(version):
                continue
            for item in folder.iterdir():
                if item.is_dir():
                    shutil.rmtree(item)
                elif item.name != CARD:
                    item.unlink()
            card = {**self.card(version), FILES_REMOVED: {"at": dt.datetime.now(dt.UTC).isoformat(), "keep": keep}}
            _write_atomic(folder / CARD, json.dumps(card, indent=2, default=str) + "\n")
            pruned.append(version)
        return pruned

    def _clean_leftovers(self) -> list[Path]:
        # called with the lock held: no live writer owns a staging folder or a temporary file now
        removed = []
        folders = [self.root, *(self.root / v for v in self.versions())]
        for folder in folders:
            for item in folder.iterdir():
                if item.name.startswith(_STAGING) and item.is_dir() and folder == self.root:
                    shutil.rmtree(item)
                    removed.append(item)
                elif item.name.startswith(".") and item.name.endswith(".tmp") and item.is_file():
                    item.unlink()
                    removed.append(item)
        history = self.root / HISTORY
        if history.is_file():
            payload = history.read_bytes()
            if payload and not payload.endswith(b"\n"):
                with history.open("r+b") as handle:  # drop the torn line a killed append left
                    handle.truncate(payload.rfind(b"\n") + 1)
                    os.fsync(handle.fileno())
                removed.append(history)
        return removed

    def _find_model(self, digest: str, size: int) -> str | None:
        """The newest version whose model.onnx has these bytes now (a damaged twin does not count)."""
        for version in reversed(self.versions()):
            model = self.root / version / MODEL_FILE
            if not model.is_file() or model.stat().st_size != size:
                continue
            try:  # the hash recorded at registration spares reading every same-sized graph
                recorded = (self.card(version).get(FILES_SHA256) or {}).get(MODEL_FILE)
            except RegistryError:
                recorded = None
            if recorded in (None, digest) and _sha256(model) == digest:
                return version
        return None

    def _verify(self, version: str, folder: Path, verify: Verify | None, action: str) -> None:
        card = self.card(version)
        if FILES_REMOVED in card:
            removed = card[FILES_REMOVED]
            raise RegistryError(
                f"{action}: the files of {version} were removed on {removed.get('at', '?')[:10]} by registry "
                f"retention (promote.keep_versions: {removed.get('keep', '?')}); only its card is kept in {folder}"
            )
        recorded = card.get(FILES_SHA256) or {}
        for name, digest in recorded.items():
            path = folder / name
            if not path.is_file():
                raise RegistryError(f"{action}: {path} is missing; the champion is unchanged")
            if _sha256(path) != digest:
                raise RegistryError(
                    f"{action}: {path} has changed since it was registered (its SHA-256 differs: the file is "
                    "damaged); the champion is unchanged"
                )
        if verify is not None:
            try:
                verify(folder, version)
            except Exception as exc:  # whatever the loader raises, this version must not serve
                raise RegistryError(
                    f"{action}: {folder} failed verification: {_one_line(exc)}; the champion is unchanged"
                ) from exc

    def _record(self, entry: dict[str, Any]) -> None:
        entry = {"time": dt.datetime.now(dt.UTC).isoformat(), **entry}
        with (self.root / HISTORY).open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _parse_event(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: line {number} is not a JSON event ({_one_line(exc)})") from None
    if not isinstance(event, dict) or event.get("event") not in _EVENTS or "version" not in event:
        raise RegistryError(f"{path}: line {number} is not a registry event with a version: {line[:60]!r}")
    return event


def _champion_stack(history: list[dict[str, Any]], current: str) -> list[str]:
    """The champions in the order they served, each one different from the one before it.

    A promotion pushes (re-promoting the top changes nothing), a rollback pops back to the version it named.
    The pointer is the truth: if a writer died after switching it but before recording, `current` is pushed.
    """
    stack: list[str] = []
    for event in history:
        version = event["version"]
        if event["event"] in ("shadow", "end_shadow"):
            continue
        if event["event"] == "promote":
            if not stack or stack[-1] != version:
                stack.append(version)
        else:
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
    if not stack or stack[-1] != current:
        stack.append(current)
    return stack
