"""The DVC adapter is the only door to DVC, and it refuses a DVC release it was not tested with."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

from evergreen import dvc_adapter
from evergreen.dvc_adapter import SUPPORTED_DVC, check_version
from evergreen.errors import DvcVersionUnsupported

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "evergreen"
ADAPTER = PACKAGE / "dvc_adapter.py"


def _dvc_imports(path: Path) -> list[str]:
    """`import dvc...` / `from dvc... import` statements anywhere in a file (deferred ones too), as text."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        # dvclive is a separate package with its own API: only `dvc` itself goes through the adapter
        found += [f"line {node.lineno}: {name}" for name in names if name == "dvc" or name.startswith("dvc.")]
    return found


def test_no_module_but_the_adapter_imports_dvc() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): hits
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ADAPTER and (hits := _dvc_imports(path))
    }
    assert not offenders, f"import DVC through evergreen.dvc_adapter only: {offenders}"


def test_the_import_check_sees_an_import_of_dvc(tmp_path: Path) -> None:
    """The control: the walk finds a deferred `from dvc...` and a plain `import dvc`, and not dvclive."""
    sample = tmp_path / "sample.py"
    sample.write_text("import dvclive\n\ndef f():\n    from dvc.repo import Repo\n    import dvc\n")
    assert _dvc_imports(sample) == ["line 4: dvc.repo", "line 5: dvc"]
    assert _dvc_imports(ADAPTER)  # the adapter itself does import it


@pytest.mark.parametrize("installed", ["3.67.0", "3.67.1", "3.67.12", "3.67.1.dev3+g1234"])
def test_a_supported_dvc_is_accepted(installed: str) -> None:
    check_version(installed)


@pytest.mark.parametrize("installed", ["3.66.9", "3.68.0", "3.50.0", "4.0.0", "2.67.0", "UNKNOWN"])
def test_an_unsupported_dvc_is_refused_naming_both_versions(installed: str) -> None:
    with pytest.raises(DvcVersionUnsupported) as raised:
        check_version(installed)
    message = str(raised.value)
    assert f"DVC {installed} is installed" in message
    assert f"dvc{SUPPORTED_DVC}" in message


def test_the_installed_dvc_is_supported() -> None:
    check_version(importlib.metadata.version("dvc"))


def test_the_adapter_checks_the_version_before_it_touches_dvc(monkeypatch, tmp_path: Path) -> None:
    """Opening a repository and running a `dvc` command both refuse a DVC the adapter was not tested with."""
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.68.0" if name == "dvc" else "0")
    dvc_adapter._require_supported.cache_clear()  # the check runs once per process; make it run again
    try:
        with pytest.raises(DvcVersionUnsupported, match="DVC 3.68.0 is installed"), dvc_adapter.open_repo(tmp_path):
            pass
        with pytest.raises(DvcVersionUnsupported, match="DVC 3.68.0 is installed"):
            dvc_adapter.add(tmp_path, ["a.csv"])
    finally:
        dvc_adapter._require_supported.cache_clear()


def test_pyproject_pins_dvc_to_the_adapters_range() -> None:
    """The pin and the adapter's range move together: a wider pin would install a DVC the adapter refuses."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.sub(r"\s+", "", d) for d in dependencies if re.match(r"dvc\s*[<>=!~]", d)]
    assert pins == [f"dvc{SUPPORTED_DVC}"]
