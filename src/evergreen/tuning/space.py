"""The declared search space (`tune.space`) as Optuna suggestions, and trial params back as params.yaml values.

Pure functions over the typed config: no study, no storage. A range over an integer key (`model.n_blocks`) is
suggested as an integer, any other range as a float. Optuna's categorical values must be scalars, so a
dimension whose choices include a list (`model.hidden`) is suggested over the choices' JSON text and decoded.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from evergreen.config import TUNABLE, Params, SearchDimension, with_overrides

_SCALAR = (type(None), bool, int, float, str)


class Suggests(Protocol):
    """The part of `optuna.Trial` this module uses (a `FixedTrial` or a fake serves too)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


def _is_int(key: str) -> bool:
    section, _, name = key.partition(".")
    return TUNABLE[section].model_fields[name].annotation is int


def _encoded(dimension: SearchDimension) -> bool:
    return any(not isinstance(choice, _SCALAR) for choice in dimension.choices or [])


def suggest(trial: Suggests, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per key of the space, drawn by the trial's sampler; values as params.yaml holds them."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            if _encoded(dim):
                values[key] = json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in dim.choices]))
            else:
                values[key] = trial.suggest_categorical(key, list(dim.choices))
        elif _is_int(key):
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, float(dim.low), float(dim.high), step=dim.step, log=dim.log)
    return values


def decode(space: dict[str, SearchDimension], trial_params: dict[str, Any]) -> dict[str, Any]:
    """A finished trial's params (as Optuna stores them) as params.yaml values; keys outside the space are dropped."""
    return {
        key: json.loads(value) if _encoded(space[key]) else value for key, value in trial_params.items() if key in space
    }


def trial_params(base: Params, values: dict[str, Any]) -> Params:
    """The params a trial trains with: `base` with the suggested values, validated like params.yaml.

    A combination the config refuses (`model.heads` not dividing `model.d_token`) is a `ConfigError` naming it.
    """
    return with_overrides(base, values)


def current_values(params: Params, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """The values the params hold now for each key of the space (the hand-set params the study is measured against)."""
    dumped = params.model_dump(mode="json")
    values = {}
    for key in space:
        section, _, name = key.partition(".")
        values[key] = dumped[section][name]
    return values
