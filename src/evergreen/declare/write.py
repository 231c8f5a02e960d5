"""`evergreen init`'s file work: read the table, place it in the project, write params.yaml and the suites.

params.yaml is edited with a round-trip YAML parser (as `orchestration.overrides` does): its `data:` and `split:`
sections are replaced, the knobs that named the old dataset's columns or dates are reset, and every other
section keeps its values and comments. The result is validated before anything is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from evergreen.config import Params, parse_params
from evergreen.declare.infer import Inference, type_text
from evergreen.errors import ConfigError, DataError
from evergreen.params_file import dump_round_trip, load_plain, load_round_trip

__all__ = ["Declared", "declare", "read_table"]

SOURCE_DIR = Path("data/source")


@dataclass(frozen=True)
class Declared:
    """What `declare` wrote: the validated params, the data source as declared, and the resets it made."""

    params: Params
    source: str
    resets: list[str]
    warnings: list[str]


def read_table(path: Path) -> pl.DataFrame:
    """A CSV (read as text, then typed as `clean` will type it) or a Parquet file; `DataError` names the file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _check_header(path)
            return type_text(pl.read_csv(path, infer_schema=False))
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from None
    raise DataError(f"{path}: not a .csv or .parquet file")


def _check_header(path: Path) -> None:
    """Refuse a header holding an unescaped quote (`a,b"c,d`), naming it: the CSV reader (here and in `ingest`)
    would take the quote as opening a field that runs to the end of the file, and find no rows at all."""
    with path.open(encoding="utf-8", errors="replace", newline="") as file:
        header = file.readline().rstrip("\r\n")
    # quotes around a name ("a,b") and doubled inside it come in pairs: an odd count leaves one open
    if header.count('"') % 2 == 1:
        stray = next(name for name in header.split(",") if '"' in name)
        raise DataError(
            f"{path}: line 1 (the header) holds an unescaped quote in {stray!r}: a CSV reader takes it as "
            "opening a quoted field that runs to the end of the file; remove the quote from the column name"
        )


def _source(root: Path, table: Path) -> tuple[str, Path | None]:
    """The table's path as `data.source` declares it (relative to the project), and where to copy it: into
    `data/source/<name>/` when it lies outside the project (a declaration must not depend on a file elsewhere on
    one machine), else nowhere."""
    table, root = table.resolve(), root.resolve()
    if table.is_relative_to(root):
        return table.relative_to(root).as_posix(), None
    declared = SOURCE_DIR / table.stem / table.name
    return declared.as_posix(), root / declared


def _reset(tree: CommentedMap, dotted: str, value: Any, resets: list[str], why: str = "") -> None:
    """Set `dotted` to `value` where the section exists, recording it; `value` None deletes the key."""
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if value is None:
        if leaf in node:
            del node[leaf]
            resets.append(f"{dotted}: removed (the default applies)")
        return
    if node.get(leaf) != value:
        node[leaf] = value
        resets.append(f"{dotted}: {value}")
        if isinstance(node, CommentedMap) and leaf in node.ca.items:  # its old comment described the old data
            node.yaml_add_eol_comment(f"# {why}", leaf)


def _flow(mapping: dict[str, Any]) -> CommentedMap:
    out = CommentedMap(mapping)
    out.fa.set_flow_style()
    return out


def _commented(inference: Inference, source: str, incoming: str, table: str) -> CommentedMap:
    """The `data:` section, one column per line with the reason `init` chose it as an end-of-line comment."""
    section = CommentedMap(inference.data_section(source, incoming))
    section.yaml_add_eol_comment(f"# inferred by `evergreen init` from {table}; edit freely", "source")
    columns = CommentedSeq(_flow(c.declaration) for c in inference.columns)
    for i, column in enumerate(inference.columns):
        columns.yaml_add_eol_comment(column.reason, i)
    section["columns"] = columns
    if inference.derived:
        derived = CommentedSeq(_flow(d) for d in inference.derived)
        section["derived"] = derived
        section.yaml_add_eol_comment(f"# calendar features {inference.derived_reason}", "derived")
    if section.get("timestamp") is not None:
        section["timestamp"] = _flow(section["timestamp"])
    else:  # written as null, not left out: dvc.yaml names data.timestamp, and DVC fails on a missing key
        section["timestamp"] = None
    return section


def _blank_line_after(tree: CommentedMap, key: str) -> None:
    keys = list(tree)
    following = keys.index(key) + 1
    if following < len(keys):
        tree.yaml_set_comment_before_after_key(keys[following], before="\n")


def _check_landing(root: Path, incoming: str) -> list[str]:
    folder = root / incoming
    files = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in (".csv", ".parquet", ".pq"))
    if not files:
        return []
    return [f"{folder} holds {len(files)} file(s) ({', '.join(files[:3])}) that ingest will append to the new data"]


def declare(root: Path, params_path: Path, table: Path, inference: Inference, force: bool) -> Declared:
    """Write the inferred `data:` and `split:` sections into `params_path`, resetting the old dataset's knobs.

    Refuses (`ConfigError`) to replace an existing declaration unless `force`.
    """
    tree = load_round_trip(params_path.read_text()) if params_path.exists() else CommentedMap()
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, dict):
        raise ConfigError(f"{params_path}: the top level must be a mapping of sections")
    if "data" in tree and not force:
        raise ConfigError(
            f"{params_path} already declares a dataset (data.source: {tree['data'].get('source', '?')}); "
            "pass --force to replace its data: and split: sections"
        )
    old_incoming = tree.get("data", {}).get("incoming", "data/incoming")
    source, copy_to = _source(root, table)
    tree.ca.items.pop("data", None)  # the old section's comments described the old data
    tree["data"] = _commented(inference, source, old_incoming, table.name)
    tree["split"] = inference.split | {"seed": tree.get("split", {}).get("seed", 42)}
    for key in ("data", "split"):  # keep a blank line after each replaced section, as the file had
        _blank_line_after(tree, key)

    resets: list[str] = []
    old_columns = "reset by `evergreen init`: it named the old dataset's columns"
    _reset(tree, "model.crosses", [], resets, old_columns)
    _reset(tree, "model.additive", [], resets, old_columns)
    why = f"set by `evergreen init`: {inference.target_transform_reason}"
    _reset(tree, "model.target_transform", inference.target_transform, resets, why)
    tree.setdefault("model", CommentedMap())  # a new table's first run compares the families (model.type auto)
    _reset(tree, "model.type", "auto", resets, "set by `evergreen init`: the families compete, chosen on valid")
    _reset(tree, "monitor.policy.feature_thresholds", {}, resets, old_columns)
    _reset(tree, "promote.metric", None, resets)  # a metric of the old task; the new task's default applies
    if inference.split.get("method") == "time":
        why = "set by `evergreen init`: the first model learns the train part, the rest is replayed"
        _reset(tree, "simulate.start", inference.split["valid_from"], resets, why)
        _reset(tree, "simulate.end", None, resets)
    else:
        _reset(tree, "simulate.start", None, resets)

    text = dump_round_trip(tree)
    # read back as the config loader will read it (one YAML, 1.2): what is validated is what every reader sees
    params = parse_params(load_plain(text), source=f"{params_path} as `init` would write it")
    if copy_to is not None:
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(table, copy_to)
    params_path.write_text(text)
    return Declared(params, source, resets, _check_landing(root, old_incoming))
