"""Each stage's imports inside `src/` against the deps `dvc.yaml` lists for it.

A stage that imports a module DVC does not know about would not rerun when that module changes: the cache
would serve outputs of code that no longer exists. This test makes that impossible to merge.

One rule for the config package, `src/evergreen/config/`. Loading `params.yaml` imports every module of it
(the root `Params` model names every section), yet a stage lists only:

- the shared modules: `config/__init__.py`, `base.py` (the strict model, secrets, errors), `metrics.py` (the
  metric table) and `params.py` (the root model, the checks across sections, the loader), and
- `config/<section>.py` for each section the stage reads, and the config modules that module imports (`tune.py`
  imports `train.py` and `model.py`). A section is read when the stage's `params:` names it (`data.columns`
  reads `data`) or when its code reaches it as `params.<section>` (`ws.params.promote.metric_for(...)`).

It need not list the other section modules, and must not (`test_no_stage_lists_a_config_section_it_does_not_read`):
that is what keeps a change to a `serve` default from rerunning `train`. Why it is sound: a section module
holds that section's fields, defaults and validators, nothing else; its defaults are that section's values
when `params.yaml` leaves them out, so they reach a stage exactly when the section's values do, through a
stage that reads the section. What spans sections (the cross-section checks, the metric table) lives in the
shared modules every stage lists. A default that changes an unread section only changes the snapshot of the
resolved config saved beside a model, as a changed value in `params.yaml` for that section would; DVC's
`params:` lists leave that to provenance too. Two limits, both named here: `workspace.py` reads sections only
for where files live (`ws.registry`, `ws.prediction_log`), which the stage's deps and outs name as paths, so its
`params.<section>` reads are not counted; and a section module imported directly from outside the config
package (not through `evergreen.config`) is always required.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml

from evergreen.config import Params
from evergreen.orchestration.dvcfile import declared_deps, declared_stages

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
CONFIG = SRC / "evergreen" / "config"
# each `params.yaml` section and the module that defines its model, read from the root model itself
SECTION_MODULES = {name: field.annotation.__module__ for name, field in Params.model_fields.items()}
# the module that turns path keys into paths (see the docstring): its `params.<section>` reads are not counted
PATHS_ONLY = SRC / "evergreen" / "workspace.py"
STAGES = declared_stages(ROOT / "dvc.yaml")
DEPS = declared_deps(ROOT / "dvc.yaml")
PARAMS = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]  # each stage's `params:` (dvcfile reads deps)


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


def declared_sections(stage: str) -> set[str]:
    """The sections a stage's `params:` names (`data.columns` is section `data`)."""
    entries = PARAMS[stage].get("params") or []
    keys = [e for e in entries if isinstance(e, str)]  # a {file: [keys]} entry names another params file
    keys += [k for e in entries if isinstance(e, dict) for k in e.get("params.yaml", [])]
    return {key.split(".")[0] for key in keys}


@functools.cache
def _sections_read_in(path: Path) -> frozenset[str]:
    """The sections a file reaches as `params.<section>` or `<...>.params.<section>`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in SECTION_MODULES:
            owner = node.value
            if (
                isinstance(owner, ast.Name)
                and owner.id == "params"
                or (isinstance(owner, ast.Attribute) and owner.attr == "params")
            ):
                found.add(node.attr)
    return frozenset(found)


def read_sections(stage: str, closure: set[Path]) -> set[str]:
    """The sections a stage reads: named in its `params:`, or reached by its code (outside the config package)."""
    code = {s for p in closure if CONFIG not in p.parents and p != PATHS_ONLY for s in _sections_read_in(p)}
    return declared_sections(stage) | code


def section_needs(section: str) -> set[Path]:
    """A section's module and the config modules it imports in turn (`tune` imports `train` and `model`).

    Not `import_closure`: that adds the package's `__init__`, which imports every section (it is a shared
    module, required of every stage anyway)."""
    seen: set[Path] = set()
    pending = [SECTION_MODULES[section]]
    while pending:
        path = _module_file(pending.pop())
        if path is not None and CONFIG in path.parents and path not in seen:
            seen.add(path)
            pending.extend(_imports(path))
    return seen


@functools.cache  # both tests of a stage ask for it
def required(stage: str) -> frozenset[Path]:
    """The files a stage must list: its import closure less the config section modules of sections it does not
    read (see the module docstring for the rule and why it is sound)."""
    closure = import_closure(f"evergreen.stages.{stage}")
    needed = set().union(*(section_needs(s) for s in read_sections(stage, closure)))
    direct = {_module_file(m) for p in closure if CONFIG not in p.parents for m in _imports(p)}
    section_files = {_module_file(m) for m in SECTION_MODULES.values()}
    return frozenset(closure - (section_files - needed - direct))


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_imports_is_a_declared_dep(stage: str) -> None:
    files = required(stage)
    assert files, f"no module evergreen.stages.{stage}"
    missing = sorted(p.relative_to(ROOT).as_posix() for p in files if not _covered(p, DEPS[stage]))
    assert not missing, f"dvc.yaml stage {stage!r} does not list these deps it imports: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_lists_a_config_section_it_does_not_read(stage: str) -> None:
    """The other half of the rule: a section module listed needlessly would rerun the stage for nothing."""
    needless = sorted(
        dep for dep in DEPS[stage] if dep.startswith("src/evergreen/config/") and ROOT / dep not in required(stage)
    )
    assert not needless, f"dvc.yaml stage {stage!r} lists config modules of sections it does not read: {needless}"


def test_the_check_sees_a_missing_dep() -> None:
    """The control: the closure of a stage holds modules two imports away, so a dropped dep would be caught."""
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure("evergreen.stages.promote")}
    assert {
        "src/evergreen/errors.py",
        "src/evergreen/config/__init__.py",
        "src/evergreen/inference/__init__.py",
    } <= closure
    assert not _covered(SRC / "evergreen/errors.py", ["src/evergreen/stages/promote.py"])


def test_the_config_rule_keeps_each_section_to_its_readers() -> None:
    """The control of the config rule: every section has its own module; `train` needs the sections it reads
    (`params:` names `train`; its code reads `promote.metric_for`), the shared modules, and a section's own
    imports (`tune` needs `train` and `model`), but not `serve`, which it never reads."""
    assert len(set(SECTION_MODULES.values())) == len(SECTION_MODULES)
    assert all(_module_file(m) is not None and _module_file(m).parent == CONFIG for m in SECTION_MODULES.values())
    train = {p.relative_to(CONFIG).as_posix() for p in required("train") if CONFIG in p.parents}
    assert {"__init__.py", "base.py", "metrics.py", "params.py", "data.py", "model.py", "train.py"} <= train
    assert "promote.py" in train and "serve.py" not in train and "tune.py" not in train
    assert {p.name for p in section_needs("tune")} == {"tune.py", "base.py", "train.py", "model.py"}


def test_stages_import_no_other_stage() -> None:
    for stage in STAGES:
        others = {
            p.relative_to(ROOT).as_posix()
            for p in import_closure(f"evergreen.stages.{stage}")
            if p.parent == SRC / "evergreen/stages" and p.stem not in (stage, "__init__")
        }
        assert not others, f"stage {stage!r} imports other stages: {sorted(others)}"
