"""Params overrides (`train.lr=0.01`), applied to `params.yaml` like `dvc exp run -S` does.

The file is edited in place with a round-trip YAML parser, so comments and layout survive, and the result
is validated before it is written: a bad key or value never reaches the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from evergreen.config import parse_params, set_dotted


def apply_overrides(path: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys in the params file; raise `ConfigError` (and leave the file alone) when invalid."""
    if not overrides:
        return
    yaml = YAML()
    yaml.preserve_quotes = True
    tree = yaml.load(path.read_text())
    for dotted, value in overrides.items():
        set_dotted(tree, dotted, value)
    buffer = io.StringIO()
    yaml.dump(tree, buffer)
    text = buffer.getvalue()
    parse_params(YAML(typ="safe").load(text), source=f"{path} with overrides {overrides}")
    path.write_text(text)
