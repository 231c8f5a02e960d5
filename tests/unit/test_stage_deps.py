"""Each stage's imports inside `src/` against the deps `dvc.yaml` lists for it.

A stage that imports a module DVC does not know about would not rerun when that module changes: the cache
would serve outputs of code that no longer exists. This test makes that impossible to merge.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from evergreen.orchestration.dvcfile import declared_deps, declared_stages

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _module_file(module: str) -> Path | None:
    """The file of an `evergreen...` module, or None for anything outside the package."""
    if module != "evergreen" and not module.startswith("evergreen."):
        return None
    base = SRC / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache  # every stage's closure walks much the same files: parse each once per run
def _imports(path: Path) -> frozenset[str]:
    """Modules a file imports at any depth of its body (deferred imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return frozenset(found)


def import_closure(module: str) -> set[Path]:
    """Every file under `src/` that importing `module` loads, including each parent package's `__init__`."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            path = _module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                pending.extend(_imports(path))
    return seen


def _covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


STAGES = declared_stages(ROOT / "dvc.yaml")
DEPS = declared_deps(ROOT / "dvc.yaml")


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_imports_is_a_declared_dep(stage: str) -> None:
    closure = import_closure(f"evergreen.stages.{stage}")
    assert closure, f"no module evergreen.stages.{stage}"
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure if not _covered(p, DEPS[stage]))
    assert not missing, f"dvc.yaml stage {stage!r} does not list these deps it imports: {missing}"


def test_the_check_sees_a_missing_dep() -> None:
    """The control: the closure of a stage holds modules two imports away, so a dropped dep would be caught."""
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure("evergreen.stages.promote")}
    assert {"src/evergreen/errors.py", "src/evergreen/config.py", "src/evergreen/inference/__init__.py"} <= closure
    assert not _covered(SRC / "evergreen/errors.py", ["src/evergreen/stages/promote.py"])


def test_stages_import_no_other_stage() -> None:
    for stage in STAGES:
        others = {
            p.relative_to(ROOT).as_posix()
            for p in import_closure(f"evergreen.stages.{stage}")
            if p.parent == SRC / "evergreen/stages" and p.stem not in (stage, "__init__")
        }
        assert not others, f"stage {stage!r} imports other stages: {sorted(others)}"
