"""No function in `src/evergreen` is longer than `MAX_LINES` (issue 20): a longer one is split into named steps.

A function that does not fit on one screen hides its steps; naming them (pure helpers called in order, as
nanoGPT's loop and lightning's hooks do, STYLE.md) is what makes it read top to bottom.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "evergreen"
MAX_LINES = 80  # from the `def` line to the last line, the docstring included (decorators are not counted)


def long_functions(path: Path, limit: int = MAX_LINES) -> list[str]:
    """`file:line name length` of each function or method in `path` longer than `limit` lines (nested ones
    included: a closure is read like any other function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{path}:{node.lineno} {node.name} {length}")
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, f"found only {len(files)} modules under {PACKAGE}: the walk is looking elsewhere"
    offenders = [entry for path in files for entry in long_functions(path)]
    listing = "\n".join(offenders)
    assert not offenders, f"functions longer than {MAX_LINES} lines (split them into named steps):\n{listing}"


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    """The control: a method one line over the limit is named, with its file, line and length; a function at
    the limit is not."""
    statements = [f"x{i} = {i}" for i in range(MAX_LINES - 1)]  # with the `def` line: MAX_LINES lines
    at_limit = ["def at_limit():", *(f"    {s}" for s in statements)]
    method = ["    async def too_long(self):", *(f"        {s}" for s in statements), "        return 1"]
    too_long = ["class Holder:", *method]
    source = tmp_path / "module.py"
    source.write_text("\n".join([*at_limit, "", *too_long]) + "\n")
    line = len(at_limit) + 3  # the blank line and the class line come first
    assert long_functions(source) == [f"{source}:{line} too_long {MAX_LINES + 1}"]
