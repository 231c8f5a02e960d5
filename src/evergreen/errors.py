"""Errors a user can cause, all under one root. Their messages are shown as they are, so they say what was
wrong and where; the CLI prints them as one line, without a traceback."""

from typing import Any


class EvergreenError(Exception):
    """Base of every error the CLI reports without a traceback."""


class ConfigError(EvergreenError, ValueError):
    """A params file that cannot be used; the message names the key path and what is wrong with it."""


class DataError(EvergreenError):
    """Input data that cannot be used: names the file, column and row where known."""


class ValidationFailed(EvergreenError):
    """A critical expectation failed: names the expectation, column, failing count and examples."""


class RegistryError(EvergreenError):
    """A registry operation that cannot be done: unknown version, nothing to roll back to, a damaged file..."""


class ModelError(EvergreenError):
    """A model that cannot be trained, evaluated or exported as asked: names the split, column or file."""


class TrainingDiverged(ModelError):
    """The training loss became NaN or infinite: names the epoch; no model is written."""


class ParityFailed(ModelError):
    """The exported ONNX graph disagrees with the torch model beyond the tolerance."""


class UnknownRequest(EvergreenError):
    """Feedback for a request id that the prediction log does not hold."""


class LabelCountMismatch(EvergreenError):
    """Feedback whose number of labels differs from the number of records the request scored."""


class LogUnavailable(EvergreenError):
    """The prediction log did not take a write in time (locked by another process, disk full, database down,
    closed): nothing of that write is acknowledged."""


class PromotionNotCommitted(EvergreenError):
    """The champion changed, but git could not record it (e.g. no git identity configured)."""


class WorkspaceBusy(EvergreenError):
    """Another orchestrated run holds this workspace (DVC allows one `repro` per workspace at a time)."""


class StageFailed(EvergreenError):
    """A DVC stage failed; the message carries the stage's own last lines of output."""


class PiiKeyMissing(EvergreenError):
    """A column is declared `pii: hash` but the environment variable holding the hash key is unset or empty."""


class TuneError(EvergreenError):
    """A study that cannot be opened, resumed or applied as asked: names the study and its storage."""


class Rejected(EvergreenError):
    """A request answered with something other than 200: its status, a one-line error and per-field details."""

    def __init__(self, status: int, error: str, detail: list[dict[str, str]] | None = None):
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail or []

    def body(self) -> dict[str, Any]:
        return {"error": self.error, **({"detail": self.detail} if self.detail else {})}


class ServeError(EvergreenError):
    """The service cannot start as configured (no token on a public address, no champion that loads, ...)."""


class DvcCommandFailed(EvergreenError):
    """A `dvc` command (`add`, `push`, `exp run`) exited non-zero; the message carries its last lines."""


class DvcStageFailed(EvergreenError):
    """`Repo.reproduce` raised: a stage's command failed, or DVC could not run or save it."""


class DvcVersionUnsupported(EvergreenError):
    """The installed DVC is outside the releases this adapter was tested with (it patches a private method)."""


class ArtifactError(EvergreenError):
    """An artefact that cannot be read: names the file (or record) and the key that is wrong."""
