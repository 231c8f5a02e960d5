"""The one reader and writer of params.yaml: YAML 1.2 (ruamel), the YAML DVC reads the same file with.

With two YAML versions, a category value `No` was a string to `evergreen init` and DVC (YAML 1.2) and the
boolean False to the config loader (PyYAML, YAML 1.1): check-config passed and `clean` failed far away. Every
module that reads or writes params.yaml goes through here. Round-trip writing keeps comments and layout; a
string that a YAML 1.1 reader would take for a boolean (yes, No, on, n, ...) is written quoted, and a float
with an exponent has a dot (1.0e-06), so even a YAML 1.1 tool reading the file sees the same values.
"""

from __future__ import annotations

import copy
import io
import math
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.representer import RoundTripRepresenter, SafeRepresenter

from evergreen.errors import ConfigError

__all__ = [
    "YAMLError",
    "dump_plain",
    "dump_round_trip",
    "flow",
    "load_plain",
    "load_round_trip",
    "override_text",
    "round_trip_yaml",
    "set_dotted",
]

# YAML 1.1 booleans: plain in YAML 1.2, so written quoted for any 1.1 reader of the file
_COMMENT = re.compile(r"\s+#.*$")
_YAML11_BOOL = re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF")


def _represent_str(representer: Any, value: str) -> Any:
    style = "'" if _YAML11_BOOL.fullmatch(value) else None
    return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _float(representer: Any, value: float) -> Any:
    # 1.0e-06, not 1e-06: YAML 1.1 reads an exponent without a dot as text
    text = repr(value)
    if not math.isfinite(value):
        return representer.represent_float(value)
    if "e" in text and "." not in text.partition("e")[0]:
        text = text.replace("e", ".0e", 1)
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _null(representer: Any, _: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")  # `key: null`, not `key:`


# subclasses: ruamel's add_representer changes the class it is called on, and DVC uses ruamel's own classes
class _RoundTripRepresenter(RoundTripRepresenter):
    pass


class _SafeRepresenter(SafeRepresenter):
    pass


for _cls in (_RoundTripRepresenter, _SafeRepresenter):
    _cls.add_representer(type(None), _null)
    _cls.add_representer(str, _represent_str)
    _cls.add_representer(float, _float)


def round_trip_yaml() -> YAML:
    """A round-trip YAML 1.2 parser and writer with params.yaml's layout (comments and quotes kept)."""
    yaml = YAML()
    yaml.Representer = _RoundTripRepresenter
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the layout of the shipped params.yaml
    yaml.width = 4096  # no re-wrapping of long lines
    return yaml


# deeper than any params file, and below where the parser gives up: at 500 levels it raises RecursionError after
# reading the whole collection, which took 1.8 s for 10,000 levels
MAX_FLOW_DEPTH = 200
# a quote opens a string only where a value starts (`don't` is plain text); `#` starts a comment after a space
_QUOTED_OR_COMMENT = re.compile(
    r"""(?:^|(?<=[\s\[{,]))(?:"(?:[^"\\]|\\.)*"|'(?:[^']|'')*')|(?:^|(?<=\s))#[^\n]*""", re.MULTILINE
)


def flow_depth(text: str) -> int:
    """How deep `[` and `{` nest in the text, outside quotes and comments: a cheap check before parsing.

    An upper bound where a plain word holds an unclosed bracket (`in [0, 1)`): each adds one level for good,
    so a file would need 200 of them to be refused wrongly."""
    depth = deepest = 0
    for char in _QUOTED_OR_COMMENT.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def load_plain(text: str) -> Any:
    """The YAML text as plain Python values (dicts, lists, str, int, float, bool, None, dates), YAML 1.2."""
    return YAML(typ="safe").load(text)


def load_round_trip(text: str) -> Any:
    """The YAML text as a round-trip tree (mappings that know their comments, lines and columns)."""
    return round_trip_yaml().load(text)


def dump_round_trip(tree: Any) -> str:
    """A round-trip tree (or plain values) as params.yaml text."""
    buffer = io.StringIO()
    round_trip_yaml().dump(tree, buffer)
    return buffer.getvalue()


def dump_plain(value: Any) -> str:
    """Plain values as block YAML in the order given (no comments to keep)."""
    return dump_round_trip(value)


def flow(value: Any) -> str:
    """A value as one line of YAML (lists and mappings in flow style), as it reads back with `load_plain`."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Representer = _SafeRepresenter
    yaml.default_flow_style = True
    yaml.width = 10**9  # one line, however long
    buffer = io.StringIO()
    yaml.dump(value, buffer)
    return buffer.getvalue().removesuffix("...\n").strip()


# ------------------------------------------------------------------------------------- dotted overrides
def set_dotted(tree: Any, dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested mappings; a missing section is a `ConfigError` naming it."""
    *parents, leaf = dotted.split(".")
    node = tree
    for i, key in enumerate(parents):
        if key not in node:
            raise ConfigError(f"{'.'.join(parents[: i + 1])}: no such section in params.yaml (override {dotted!r})")
        node = node[key]
    node[leaf] = value


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
        if load_plain(old) != plain[leaf]:
            return False  # the value continues past this line (or holds a '#'): not safe to edit here
    except YAMLError:
        return False
    new = flow(value)
    tail = ""
    if comment:  # keep the comment in its column when the new value fits before it
        tail = " " * max(1, len(old) + len(comment.group()) - len(comment.group().lstrip()) - len(new))
        tail += comment.group().lstrip()
    lines[number] = line[:column] + new + tail + ("\n" if line.endswith("\n") else "")
    return True


def _round_trip(text: str, overrides: dict[str, Any]) -> str:
    tree = load_round_trip(text)
    for dotted, value in overrides.items():
        set_dotted(tree, dotted, value)
    return dump_round_trip(tree)


def override_text(text: str, overrides: dict[str, Any]) -> str:
    """The params text with dotted keys set: in place line by line where possible, the rest by a YAML round trip."""
    plain, expected = load_plain(text), load_plain(text)
    for dotted, value in overrides.items():
        set_dotted(expected, dotted, copy.deepcopy(value))
    lines = text.splitlines(keepends=True)
    tree = load_round_trip(text)
    rest = {k: v for k, v in overrides.items() if not _edit_line(lines, tree, plain, k, v)}
    edited = "".join(lines)
    if rest:
        edited = _round_trip(edited, rest)
    if load_plain(edited) == expected:
        return edited
    return _round_trip(text, overrides)
