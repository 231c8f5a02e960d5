"""Params overrides (`train.lr=0.01`), applied to `params.yaml` like `dvc exp run -S` does.

The file is edited in place and validated before it is written: a bad key or value never reaches the file.
A key whose value sits on its own line (`lr: 0.003   # comment`) has just that value replaced, so every other
byte stays as it was: comments, aligned columns, blank lines. Anything else (a key the file does not have yet,
a value spread over several lines) goes through a round-trip YAML parser, which keeps comments but may re-flow
the layout around it.
"""

from __future__ import annotations

from evergreen.config import apply_overrides
from evergreen.params_file import override_text

__all__ = ["apply_overrides", "override_text"]
