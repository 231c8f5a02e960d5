"""The packages of `src/evergreen` form layers: no two import each other, and the prediction log sits below
everything that reads or writes it (serving, monitoring, the shadow gate, the backtest).

Why: `registry` and `serving` once imported each other (the shadow gate read the log that lived in serving,
and serving loads champions from the registry), so neither could be read, tested or changed alone. The graph
is built from the source (every import at any depth, deferred ones inside functions too), one node per
package or top-level module; imports under `if TYPE_CHECKING:` are left out, as they never run.
"""

from __future__ import annotations

import ast
import functools
import graphlib
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "evergreen"
# what the prediction log may import: what sits below it
PREDICTION_LOG_MAY_IMPORT = {"config", "errors", "privacy", "data", "workspace"}


def _node(module: str) -> str | None:
    """The package (or top-level module) of `evergreen` that `module` belongs to; None outside it."""
    parts = module.split(".")
    return parts[1] if parts[0] == "evergreen" and len(parts) > 1 else None


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imported(tree: ast.Module) -> set[str]:
    """The `evergreen...` modules a file imports at run time (`from evergreen import x` counts as `evergreen.x`)."""
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "evergreen":
                found.update(f"evergreen.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Each package (or top-level module) of `src` and the others it imports (a copy: a test may change it)."""
    return defaultdict(set, {package: set(imports) for package, imports in _parsed_graph(src).items()})


@functools.cache  # parsing every module of src takes about 0.5 s, and four tests ask
def _parsed_graph(src: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in src.rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        if parts == ("__init__",):
            continue
        source = parts[0]
        for module in _imported(ast.parse(path.read_text())):
            target = _node(module)
            if target is not None and target != source:
                graph[source].add(target)
    return graph


def mutual_pairs(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The pairs (a, b), a < b, where a imports b and b imports a."""
    return {(a, b) for a, targets in graph.items() for b in targets if a < b and a in graph.get(b, set())}


def test_no_two_packages_import_each_other():
    graph = import_graph()
    assert mutual_pairs(graph) == set(), {pair: "import each other" for pair in mutual_pairs(graph)}


def test_the_packages_form_layers_without_a_cycle_of_any_length():
    try:
        order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"the packages import each other round a cycle: {' -> '.join(exc.args[1])}") from None
    assert order.index("prediction_log") < order.index("serving")


def test_registry_and_serving_do_not_import_each_other():
    """The pair this layering was made for: serving loads champions from the registry, never the reverse."""
    graph = import_graph()
    assert "registry" in graph["serving"]
    assert "serving" not in graph["registry"]


def test_the_prediction_log_imports_nothing_above_it():
    graph = import_graph()
    assert graph["prediction_log"] <= PREDICTION_LOG_MAY_IMPORT, graph["prediction_log"] - PREDICTION_LOG_MAY_IMPORT
    readers = {"serving", "monitoring", "registry", "backtest"}
    assert all("prediction_log" in graph[reader] for reader in readers)  # it is below them, not beside them


def test_the_check_sees_a_cycle_and_ignores_type_checking_imports(tmp_path: Path):
    """The control: a cycle through a deferred import is found; one through `if TYPE_CHECKING:` is not."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from evergreen.a import x\n"
    )
    (tmp_path / "a" / "m.py").write_text("import evergreen.c\ndef f():\n    from evergreen.b.n import y\n")
    (tmp_path / "b" / "n.py").write_text("from evergreen import a\n")
    graph = import_graph(tmp_path)
    assert mutual_pairs(graph) == {("a", "b")}
    assert graph["a"] == {"b", "c"} and "a" not in graph["c"]


def test_every_user_facing_error_is_defined_in_errors_py():
    """One home for the errors a user can cause: every class deriving (directly or not) from `EvergreenError`
    lives in `evergreen/errors.py`, so a reader finds them, and their wording, in one place."""
    bases: dict[str, tuple[Path, list[str]]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = (path, [ast.unparse(b).split(".")[-1] for b in node.bases])

    def user_facing(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "EvergreenError":
            return True
        if name not in bases or name in seen:
            return False
        return any(user_facing(base, seen | {name}) for base in bases[name][1])

    elsewhere = sorted(f"{path.relative_to(SRC)}: {name}" for name, (path, _) in bases.items()
                       if user_facing(name) and path.name != "errors.py")  # fmt: skip
    assert not elsewhere, f"errors defined outside errors.py: {elsewhere}"
    assert user_facing("StageFailed") and user_facing("ParityFailed")  # the walk does find them (a control)
