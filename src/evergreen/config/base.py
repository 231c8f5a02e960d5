"""What every config section shares: the strict base model, the secret URL type, and the error that carries
several key paths.

Each section module imports only this one (and the sections it builds on), so a section's module is an input
of exactly the stages that read that section (`dvc.yaml` lists it for them alone).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, SecretStr, SerializationInfo


class StrictModel(BaseModel):
    """The base of every section: an unknown key is an error naming it (a typo never falls back to a default
    silently), and a validated config is frozen, so what was checked is what runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# the params whose value may hold a password; each is a `SecretUrl`, and `redact_params` masks them in dicts
SECRET_PATHS = ("serve.log_url", "tune.storage")
MASK = "***"
# `model_dump(context=REVEAL)` keeps secrets (to re-validate a copy); every other dump masks them
REVEAL = {"reveal_secrets": True}
_PASSWORD_PARAM = re.compile(r"((?:^|[?&;\s])password=)[^&;\s]*", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def mask_url(text: str) -> str:
    """`text` with its password replaced by ***: a URL's user:password@ part and any password= parameter.

    It does not need `text` to parse: a malformed URL is masked too. Where the password's end is unclear (an
    unescaped @ or /), everything from the user's colon to the last @ is masked, erring on the safe side.
    """
    scheme = text.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    at = text.rfind("@")
    if at > start:
        colon = text.find(":", start, at)
        if colon >= 0:
            text = text[: colon + 1] + MASK + text[at:]
    return _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, text)


class SecretText(SecretStr):
    """A URL that may hold a password: shown (str, repr, dumps) with the password masked; the real value only
    through `get_secret_value()`, at the edge that connects (the prediction log writer, Optuna's storage)."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


def _url_problem(secret: SecretText) -> SecretText:
    """Refuse a URL a database driver would refuse later, in a message that never shows the password."""
    url = secret.get_secret_value()
    if "://" not in url:
        return secret  # not a URL (tune.storage may name an environment variable): its field decides
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("the URL holds a space or control character (percent-encode it, e.g. %20 for a space)")
    if _BAD_ESCAPE.search(url):
        raise ValueError("the URL holds a % that is not followed by two hex digits (write %25 for a % itself)")
    try:
        port = urlsplit(url).port  # raises on a bad port or an unclosed [IPv6 host
    except ValueError as exc:
        # urllib's messages name the part, not the URL: safe to show ("Invalid IPv6 URL", "Port out of range")
        raise ValueError(f"not a valid URL: {str(exc).split(' as ', 1)[0]}") from None
    if port == 0:
        raise ValueError("the URL's port must be from 1 to 65535")
    return secret


def _serialize_secret(value: SecretText, info: SerializationInfo) -> str:
    return value.get_secret_value() if (info.context or {}).get("reveal_secrets") else str(value)


SecretUrl = Annotated[SecretText, AfterValidator(_url_problem), PlainSerializer(_serialize_secret)]


def redact_params(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a params mapping (a card's, a checkpoint's) with every `SECRET_PATHS` value masked.

    For params written by an older Evergreen, before secrets had their own type: what is shown is safe anyway.
    """
    out = dict(raw)
    for path in SECRET_PATHS:
        section, key = path.split(".")
        if isinstance(out.get(section), dict) and isinstance(out[section].get(key), str):
            out[section] = {**out[section], key: mask_url(out[section][key])}
    return out


def shown_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted overrides fit for a message: a secret's value masked."""
    return {k: mask_url(str(v)) if k in SECRET_PATHS and v is not None else v for k, v in overrides.items()}


Problem = tuple[str, str]  # (key path, what is wrong)


class CrossReferenceErrors(ValueError):
    """Several problems found by one model validator, each with its own key path (`parse_params` lists them)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems
