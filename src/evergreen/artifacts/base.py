"""The base of every artefact type: a typed record with a JSON round trip, and a file that holds one.

Reading is tolerant where it can be and strict where it must be: a key this version does not know (written by
an older or newer Evergreen) is kept, not rejected, so an old file loads and rewriting it loses nothing; a key
it does know must hold the declared type, or reading fails with an `ArtifactError` that names the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from evergreen.data import io
from evergreen.errors import ArtifactError

__all__ = ["Artifact", "ArtifactError", "Record", "describe"]


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: the first wrong key and why, and how many more there are."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


class Record(BaseModel):
    """A typed part of an artefact. `to_dict` writes the fields that were set (by the code that made it, or
    present in the file it was read from) in declared order, then the unknown keys it was read with."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def from_dict(cls, payload: Any, source: str | Path | None = None) -> Self:
        """Validate a parsed JSON object; `source` (a file, a version) goes into the error message."""
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise ArtifactError(f"{source or cls.__name__}: not a valid {cls.__name__}: {describe(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class Artifact(Record):
    """A record that is a whole JSON file of the project (its path comes from the `Workspace`)."""

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read and validate `path`; a missing, unparseable or mistyped file is an `ArtifactError`."""
        payload = io.read_json(path, ArtifactError, missing="missing (the stage that writes it has not run)")
        return cls.from_dict(payload, path)

    @classmethod
    def read_if_exists(cls, path: Path) -> Self | None:
        """`read`, or None when there is no such file."""
        return cls.read(path) if path.exists() else None

    def write(self, path: Path) -> None:
        """Write atomically, with stable key order (`dvc metrics diff` and git diffs stay readable)."""
        io.write_json(self.to_dict(), path)
