"""Errors a user can cause, all under one root. Their messages are shown as they are, so they say what was
wrong and where; the CLI prints them as one line, without a traceback."""


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
