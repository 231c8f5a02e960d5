"""Personal data: what is stored of a column declared `pii: hash` or `pii: drop` (`data.columns`).

The model sees a personal feature as it is; what Evergreen *keeps* of it (the prediction log, monitoring's
reports, validation's example values) is a keyed hash, HMAC-SHA256 with the key held in the environment
variable `data.pii_key_env`, or nothing at all. A keyed hash keeps what the log needs of an id (the same value
gives the same hash, so `evergreen forget --id` still finds its rows) without letting anyone who reads the log
recompute it from a guessed value, as a plain SHA-256 of an e-mail address or a phone number would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from evergreen.config import DataConfig
from evergreen.errors import PiiKeyMissing

__all__ = ["HASH_PREFIX", "PiiKeyMissing", "Redactor", "hash_value", "personal_columns", "without_personal"]

HASH_PREFIX = "hmac-sha256:"  # says what a stored value is, so nobody mistakes it for the value


def personal_columns(data: DataConfig) -> dict[str, str]:
    """The columns declared personal, by name: "hash" or "drop"."""
    return {c.name: c.pii for c in data.columns if c.pii is not None}


def without_personal(data: DataConfig) -> DataConfig:
    """The declaration without its personal columns: what monitoring may judge and report. (The log holds a
    hashed column's hashes, the reference sample its clear values: the two cannot be compared anyway.)"""
    if not personal_columns(data):
        return data
    return data.model_copy(update={"columns": [c for c in data.columns if c.pii is None]})


def _text(value: Any) -> str:
    # the text a value is hashed as: an int id sent as 17 and typed as "17" on the command line hash alike
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return str(value)


def hash_value(value: Any, key: bytes) -> str:
    """The keyed hash stored in place of a personal value ("hmac-sha256:" and 64 hex digits)."""
    return HASH_PREFIX + hmac.new(key, _text(value).encode("utf-8"), hashlib.sha256).hexdigest()


def _key(env: str, columns: list[str]) -> bytes:
    key = os.environ.get(env, "")
    if not key:
        raise PiiKeyMissing(
            f"data.columns declares {', '.join(columns)} pii: hash, but the environment variable {env} holding "
            "the hash key is not set (set it to a long random secret, the same for every process of the project)"
        )
    return key.encode("utf-8")


class Redactor:
    """Applies the declarations to records and frames before they are stored. Building one where a column is
    `pii: hash` reads the key, so a missing key stops the process at start-up, not at its first request."""

    def __init__(self, data: DataConfig):
        self.policies = personal_columns(data)
        self.hashed = [name for name, policy in self.policies.items() if policy == "hash"]
        self.dropped = [name for name, policy in self.policies.items() if policy == "drop"]
        self.key = _key(data.pii_key_env, self.hashed) if self.hashed else b""

    def __bool__(self) -> bool:
        return bool(self.policies)

    def value(self, name: str, value: Any) -> Any:
        """What is stored of one value of column `name` (None stays None: a missing value says nothing)."""
        policy = self.policies.get(name)
        if policy is None or value is None:
            return value
        return hash_value(value, self.key) if policy == "hash" else None

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record as it may be stored: hashed values in place, dropped fields left out."""
        if not self.policies:
            return record
        return {name: self.value(name, value) for name, value in record.items() if self.policies.get(name) != "drop"}

    def values(self, name: str, values: list[Any]) -> list[Any]:
        """Example values of column `name` as they may be shown: hashed, or none at all when it is dropped."""
        if self.policies.get(name) == "drop":
            return []
        return [self.value(name, v) for v in values]
