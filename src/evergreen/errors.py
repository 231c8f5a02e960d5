"""Errors a user can cause. Their messages are shown as they are, so they say what was wrong and where."""


class EvergreenError(Exception):
    """Base of every error the CLI reports without a traceback."""


class DataError(EvergreenError):
    """Input data that cannot be used: names the file, column and row where known."""


class ValidationFailed(EvergreenError):
    """A critical expectation failed: names the expectation, column, failing count and examples."""


class ModelError(EvergreenError):
    """A model that cannot be trained, evaluated or exported as asked: names the split, column or file."""


class TrainingDiverged(ModelError):
    """The training loss became NaN or infinite: names the epoch; no model is written."""


class ParityFailed(ModelError):
    """The exported ONNX graph disagrees with the torch model beyond the tolerance."""
