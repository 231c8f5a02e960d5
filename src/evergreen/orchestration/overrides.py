"""Params overrides (`train.lr=0.01`), applied to `params.yaml` like `dvc exp run -S` does.

The file is edited in place and validated before it is written: a bad key or value never reaches the file.
A key whose value sits on its own line (`lr: 0.003   # comment`) has just that value replaced, so every other
byte stays as it was: comments, aligned columns, blank lines. Anything else (a key the file does not have yet,
a value spread over several lines) goes through a round-trip YAML parser, which keeps comments but may re-flow
the layout around it.
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from evergreen.config import parse_params, set_dotted

_COMMENT = re.compile(r"\s+#.*$")


def _flow(value: Any) -> str:
    """A value as one line of YAML (lists and mappings in flow style)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("...\n").strip()


def _edit_line(lines: list[str], tree: Any, plain: Any, dotted: str, value: Any) -> bool:
    """Replace the value of `dotted` where it stands, when it is on one line with its key; False otherwise.

    `tree` is the round-trip parse (it knows lines and columns), `plain` the same text as plain Python values.
    """
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        if not hasattr(node, "lc") or key not in node:
            return False
        node, plain = node[key], plain[key]
    if not hasattr(node, "lc") or leaf not in node or node.lc.value(leaf)[0] != node.lc.key(leaf)[0]:
        return False
    number, column = node.lc.value(leaf)
    line = lines[number]
    rest = line[column:].rstrip("\n")
    comment = _COMMENT.search(rest)
    old = rest[: comment.start()] if comment else rest
    try:
        if yaml.safe_load(old) != plain[leaf]:
            return False  # the value continues past this line (or holds a '#'): not safe to edit here
    except yaml.YAMLError:
        return False
    new = _flow(value)
    tail = ""
    if comment:  # keep the comment in its column when the new value fits before it
        tail = " " * max(1, len(old) + len(comment.group()) - len(comment.group().lstrip()) - len(new))
        tail += comment.group().lstrip()
    lines[number] = line[:column] + new + tail + ("\n" if line.endswith("\n") else "")
    return True


def _round_trip(text: str, overrides: dict[str, Any]) -> str:
    rt = YAML()
    rt.preserve_quotes = True
    # floats as PyYAML writes them (1.0e-06): ruamel's `1e-06` is a string to YAML 1.1 readers (DVC, PyYAML)
    rt.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float", _flow(v)))
    rt.representer.add_representer(type(None), lambda r, v: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    rt.width = 4096  # no re-wrapping of long lines
    rt.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own list indentation
    tree = rt.load(text)
    for dotted, value in overrides.items():
        set_dotted(tree, dotted, value)
    buffer = io.StringIO()
    rt.dump(tree, buffer)
    return buffer.getvalue()


def override_text(text: str, overrides: dict[str, Any]) -> str:
    """The params text with dotted keys set: in place line by line where possible, the rest by a YAML round trip."""
    plain, expected = yaml.safe_load(text), yaml.safe_load(text)
    for dotted, value in overrides.items():
        set_dotted(expected, dotted, copy.deepcopy(value))
    lines = text.splitlines(keepends=True)
    tree = YAML().load(text)
    rest = {k: v for k, v in overrides.items() if not _edit_line(lines, tree, plain, k, v)}
    edited = "".join(lines)
    if rest:
        edited = _round_trip(edited, rest)
    if yaml.safe_load(edited) == expected:
        return edited
    return _round_trip(text, overrides)


def apply_overrides(path: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys in the params file; raise `ConfigError` (and leave the file alone) when invalid."""
    if not overrides:
        return
    text = override_text(path.read_text(), overrides)
    parse_params(yaml.safe_load(text), source=f"{path} with overrides {overrides}")
    path.write_text(text)
