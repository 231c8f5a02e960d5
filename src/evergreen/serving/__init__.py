"""The prediction service (`app`: HTTP over `service`), its prediction log (`log`), request model (`schema`),
champion loading (`champion`) and batch scoring (`batch`). None of it imports torch."""

from evergreen.errors import EvergreenError


class ServeError(EvergreenError):
    """The service cannot start as configured (no token on a public address, no champion that loads, ...)."""
