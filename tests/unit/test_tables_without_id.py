"""Tables without an id (and without a timestamp): ingest deduplicates exact rows only, split goes random,
key conflicts above the declared share fail ingest, and the gate's row keys identify rows by content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from evergreen.config import parse_params
from evergreen.data.split import key_kind, row_keys
from evergreen.errors import DataError
from evergreen.stages import clean as clean_stage
from evergreen.stages import ingest as ingest_stage
from evergreen.stages import split as split_stage
from evergreen.workspace import Workspace

BARE: dict[str, Any] = {
    "data": {
        "source": "in/*.csv",
        "task": "classification",
        "timestamp": None,
        "columns": [
            {"name": "year", "type": "int", "role": "feature", "kind": "numeric"},
            {"name": "colour", "type": "str", "role": "feature"},
            {"name": "size", "type": "float", "role": "feature", "nullable": True, "missing": "keep"},
            {"name": "label", "type": "str", "role": "target", "allowed": ["a", "b"]},
        ],
    },
}


def _project(tmp_path: Path, text: str, raw: dict[str, Any] | None = None) -> Workspace:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "table.csv").write_text(text)
    return Workspace(tmp_path, parse_params(raw or BARE))


def _rows(n: int) -> str:
    # many rows share a year, as in the table: the year must never act as a key
    return "".join(f"{2000 + i % 3},{'red' if i % 2 else 'blue'},{i / 10},{'a' if i % 4 else 'b'}\n" for i in range(n))


def test_the_key_of_a_table_without_an_id_is_every_column():
    data = parse_params(BARE).data
    assert data.key == ["year", "colour", "size", "label"]
    with_time = {**BARE["data"], "timestamp": {"column": "day"}}
    with_time["columns"] = [*BARE["data"]["columns"], {"name": "day", "type": "date", "role": "timestamp"}]
    assert "day" in parse_params({"data": with_time}).data.key and len(parse_params({"data": with_time}).data.key) == 5


def test_no_id_no_timestamp_runs_ingest_clean_and_a_random_split(tmp_path, capsys):
    # 200 distinct rows, one exact duplicate, and one duplicate with a missing cell (still the same row)
    text = "year,colour,size,label\n" + _rows(200) + "2000,blue,0.0,b\n2001,red,,a\n2001,red,,a\n"
    ws = _project(tmp_path, text)
    assert ws.params.split.method_for(ws.params.data) == "random"
    ingest_stage.run(ws)
    raw = pl.read_parquet(ws.raw)
    assert raw.height == 201  # 200 + the row with a missing size; its repeat and the exact duplicate are gone
    assert pl.read_parquet(ws.raw_conflicts).height == 0  # a whole-row key has nothing left to conflict on
    clean_stage.run(ws)
    split_stage.run(ws)
    parts = {name: pl.read_parquet(ws.split(name)) for name in ("train", "valid", "test")}
    assert sum(p.height for p in parts.values()) == 201 and parts["train"].height > 150
    assert "split: train" in capsys.readouterr().out


def test_key_conflicts_above_the_declared_share_fail_ingest_with_examples(tmp_path):
    raw = {
        "data": {**BARE["data"], "columns": [{"name": "code", "type": "int", "role": "id"}, *BARE["data"]["columns"]]}
    }
    # 100 rows, then 5 rows repeating ids 1-5 with another label: 5 conflicts of 105 rows read
    text = "code,year,colour,size,label\n" + "".join(f"{i},2000,red,1.0,a\n" for i in range(100))
    text += "".join(f"{i},2000,red,1.0,b\n" for i in range(1, 6))
    ws = _project(tmp_path, text, raw)
    with pytest.raises(
        DataError,
        match=r"5 of 105 rows \(4\.8%\) repeat the key code .*above ingest\.max_key_conflicts \(1\.0%\).*code=1",
    ):
        ingest_stage.run(ws)
    assert not ws.raw.exists()  # nothing written: the raw data stays as it was
    raw["ingest"] = {"max_key_conflicts": 0.05}
    ws = Workspace(tmp_path, parse_params(raw))
    ingest_stage.run(ws)
    assert pl.read_parquet(ws.raw_conflicts).height == 5


def test_a_time_split_without_a_timestamp_is_a_config_error_naming_the_key():
    from evergreen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"split\.method: 'time' needs data\.timestamp"):
        parse_params({**BARE, "split": {"method": "time"}})


def test_row_keys_are_ids_or_content_digests():
    data = parse_params(BARE).data
    frame = pl.DataFrame({"year": [2000, 2000, 2001], "colour": ["a", "a", None], "size": [1.0, 1.0, None],
                          "label": ["a", "a", "b"]})  # fmt: skip
    keys = row_keys(frame, data).to_list()
    assert keys[0] == keys[1] != keys[2] and key_kind(data) == "row content"
    assert row_keys(frame.reverse(), data).to_list() == keys[::-1]  # content, not position
