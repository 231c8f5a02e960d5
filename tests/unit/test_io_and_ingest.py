"""Reading files and combining arrivals: every bad file is an error naming the file, nothing is lost."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from evergreen.data.ingest import combine
from evergreen.data.io import list_landing, parquet_writer, read_text_table, resolve_source
from evergreen.data.schema import SOURCE_FILE, SOURCE_ROW
from evergreen.errors import DataError

HEADER = "id,day,hr,weather,temp,hum,y\n"
ROWS = "1,2011-01-01,0 ,1,0.2,0.5,10\n2,2011-01-01,1,2,0.3,0.6,12\n"


def _write(folder: Path, name: str, text: str | bytes) -> str:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_reads_dirty_cells_as_text_with_lineage(tmp_path, tiny):
    frame = read_text_table(_write(tmp_path, "a.csv", HEADER + ROWS), tiny.data)
    assert frame["hr"].to_list() == ["0 ", "1"]  # kept as it arrived; clean strips it
    assert frame[SOURCE_ROW].to_list() == [1, 2]
    assert frame[SOURCE_FILE][0].endswith("a.csv")


def test_parquet_is_read_as_text(tmp_path, tiny):
    path = tmp_path / "a.parquet"
    pl.read_csv((HEADER + ROWS).encode()).write_parquet(path)
    frame = read_text_table(str(path), tiny.data)
    assert frame.schema["y"] == pl.String and frame["y"].to_list() == ["10", "12"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        (HEADER, "the file has a header but no data rows"),
        (HEADER.replace(",hum", "") + "1,2011-01-01,0,1,0.2,10\n", "missing declared column(s) 'hum'"),
        (HEADER.strip() + ",casual\n" + "1,2011-01-01,0,1,0.2,0.5,10,3\n", "unexpected column(s) 'casual'"),
        (
            (HEADER + "1,2011-01-01,0,1,0.2,0.5,10\n3,2011-01-02,1,1,0.2,0.5,\xff\n").encode("latin-1"),
            "line 3 is not valid UTF-8",
        ),
    ],
    ids=["empty", "header-only", "missing-column", "extra-column", "non-utf8"],
)
def test_bad_files_name_the_file(tmp_path, tiny, content, message):
    path = _write(tmp_path, "bad.csv", content)
    with pytest.raises(DataError) as err:
        read_text_table(path, tiny.data)
    assert message in str(err.value) and "bad.csv" in str(err.value)


def test_source_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match=r"data.source: no file matches '.*nowhere/\*.csv'"):
        resolve_source(str(tmp_path / "nowhere" / "*.csv"))


def test_source_glob_and_landing_order(tmp_path):
    """A glob picks what it names, in name order; the landing folder lists its data files in name order,
    skipping only DVC pointers, .gitignore, hidden files and README.md."""
    for name in ("b.csv", "a.csv", "c.csv.gz", "notes.txt"):
        _write(tmp_path, name, HEADER)
    assert [Path(p).name for p in resolve_source(str(tmp_path / "*.csv"))] == ["a.csv", "b.csv"]
    (tmp_path / "notes.txt").unlink()
    for name in ("b.csv.dvc", ".gitignore", ".DS_Store", "README.md"):
        _write(tmp_path, name, "not data")
    assert [Path(p).name for p in list_landing(tmp_path)] == ["a.csv", "b.csv", "c.csv.gz"]
    assert list_landing(tmp_path / "missing") == []


def test_combine_dedups_by_key_and_keeps_conflicts(tmp_path, tiny):
    first = read_text_table(_write(tmp_path, "1.csv", HEADER + ROWS), tiny.data)
    # row 1 re-delivered unchanged, row 2 with a different label (a conflict), row 3 new
    later = read_text_table(
        _write(
            tmp_path,
            "2.csv",
            HEADER + "1,2011-01-01,0 ,1,0.2,0.5,10\n2,2011-01-01,1,2,0.3,0.6,99\n3,2011-01-01,2,1,0.3,0.6,7\n",
        ),
        tiny.data,
    )
    result = combine([first, later], key=["id"])
    assert result.raw["id"].to_list() == ["1", "2", "3"]
    assert result.raw.filter(pl.col("id") == "2")["y"].item() == "12"  # first arrival wins
    assert result.repeated_rows == 1
    assert result.conflicts["y"].to_list() == ["99"]  # nothing lost
    summary = result.summary()
    assert summary["rows_read"] == 5 and summary["rows_out"] == 3 and summary["key_conflicts"] == 1


def test_combine_keeps_rows_without_a_key(tmp_path, tiny):
    frame = read_text_table(_write(tmp_path, "a.csv", HEADER + ",,,,,,\n,,,,,,\n" + ROWS), tiny.data)
    result = combine([frame], key=["id"])
    assert result.raw.height == 4  # blank rows go on to clean, which quarantines them with a reason


def test_a_parquet_file_written_frame_by_frame_is_published_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out.parquet"
    pl.DataFrame({"a": [0], "b": ["old"]}).write_parquet(path)
    with pytest.raises(RuntimeError), parquet_writer(path) as write:
        write(pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
        raise RuntimeError("killed half way")
    assert pl.read_parquet(path)["b"].to_list() == ["old"]  # readers still see the old file
    with parquet_writer(path) as write:
        write(pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
        write(pl.DataFrame({"a": [3], "b": [None]}))  # a batch of nulls keeps the column's type
    assert pl.read_parquet(path).to_dict(as_series=False) == {"a": [1, 2, 3], "b": ["x", "y", None]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no temporary file left
