"""Arrivals are never skipped in silence, and a re-delivery in another format is not a conflict.

A compressed CSV in the landing folder is ingested; any file there that cannot be read is a `DataError`
naming it and the accepted suffixes; only DVC pointers, `.gitignore`, hidden files and README.md are
ignored. The same row delivered as CSV and as Parquet is a repeat, not a key conflict.
"""

from __future__ import annotations

import datetime as dt
import gzip
import struct
from pathlib import Path

import polars as pl
import pytest

from evergreen.config import Params, parse_params
from evergreen.data.ingest import combine
from evergreen.data.io import READABLE_SUFFIXES, list_landing, read_text_table, resolve_source
from evergreen.data.schema import parse_text
from evergreen.errors import DataError
from evergreen.stages import clean as clean_stage
from evergreen.stages import ingest as ingest_stage
from evergreen.workspace import Workspace

HEADER = "id,day,hr,weather,temp,hum,y\n"
SOURCE = HEADER + "1,2011-01-01,0,1,0.2,0.5,10\n2,2011-01-01,1,2,0.3,0.6,12\n"
BATCH = HEADER + "3,2011-01-02,0,1,0.25,0.55,7\n4,2011-01-02,1,3,0.35,0.65,9\n"


def zstd_frame(payload: bytes) -> bytes:
    """A valid zstd frame holding `payload` in one raw block (RFC 8878), for payloads under 256 bytes: the
    project needs no zstd library to write one, and polars must still read it."""
    assert len(payload) < 256
    header = struct.pack("<IBB", 0xFD2FB528, 0x20, len(payload))  # single segment, 1-byte content size
    block = (1 | len(payload) << 3).to_bytes(3, "little")  # last block, raw, its size
    return header + block + payload


@pytest.fixture
def project(tmp_path: Path, tiny: Params) -> Workspace:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "source.csv").write_text(SOURCE)
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    return Workspace(tmp_path, tiny)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("b.csv.gz", gzip.compress(BATCH.encode())),
        ("b.CSV.GZ", gzip.compress(BATCH.encode())),
        ("b.csv.zst", zstd_frame(BATCH.encode())),
        ("b.parquet", None),
    ],
    ids=["gzip", "upper-case", "zstd", "parquet"],
)
def test_a_compressed_batch_in_the_landing_folder_is_ingested(project, name, content):
    """A .csv.gz / .csv.zst (any case) or Parquet batch in data/incoming is read by the real ingest stage:
    its rows reach data/raw, with lineage naming the file (it used to be skipped with exit status 0)."""
    target = project.incoming / name
    if content is None:
        pl.read_csv(BATCH.encode(), infer_schema=False).write_parquet(target)
    else:
        target.write_bytes(content)
    for ignored in ("b.csv.gz.dvc", ".gitignore", ".hidden.csv", "README.md"):
        (project.incoming / ignored).write_text("not data\n")
    ingest_stage.run(project)
    raw = pl.read_parquet(project.raw)
    assert raw["id"].to_list() == ["1", "2", "3", "4"]
    assert raw.filter(pl.col("id") == "4")["_source_file"].item().endswith(name)


@pytest.mark.parametrize("name", ["b.csv.bz2", "b.txt", "b.json", "b.xlsx", "b.csv.gz.part", "b"])
def test_a_landing_file_with_another_suffix_is_refused_by_name(project, name):
    """Any landing file that is not readable (and not ignored) fails the ingest stage with a DataError that
    names it and lists the accepted suffixes; raw data is not written."""
    (project.incoming / "a.csv").write_text(BATCH)
    (project.incoming / name).write_bytes(b"3,2011-01-02\n")
    with pytest.raises(DataError) as err:
        ingest_stage.run(project)
    message = str(err.value)
    assert f"cannot read {name}:" in message and all(s in message for s in READABLE_SUFFIXES)
    assert not project.raw.exists()


def test_a_sub_folder_in_the_landing_folder_is_refused(project):
    """A folder dropped into data/incoming (its files would be skipped) is a DataError naming it."""
    (project.incoming / "2013-01").mkdir()
    (project.incoming / "2013-01" / "a.csv").write_text(BATCH)
    with pytest.raises(DataError, match="sub-folder.*2013-01"):
        list_landing(project.incoming)


def test_a_source_folder_with_an_unreadable_file_is_refused(tmp_path):
    """`data.source` naming a folder reads every file in it; one it cannot read is named, not skipped."""
    (tmp_path / "a.csv").write_text(SOURCE)
    (tmp_path / "a.csv.dvc").write_text("outs: []\n")
    assert [Path(p).name for p in resolve_source(str(tmp_path))] == ["a.csv"]
    (tmp_path / "b.tsv").write_text(SOURCE)
    with pytest.raises(DataError, match=r"cannot read .*b\.tsv: a data file must end in \.csv"):
        resolve_source(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("b.csv.gz", b"\x1f\x8b\x08\x00broken", "cannot be decompressed as gzip"),
        ("b.csv.gz", gzip.compress(HEADER.encode() + b"3,2011-01-02,0,1,0.2,0.5,\xff\n"), "line 2 is not valid UTF"),
        ("b.csv.gz", gzip.compress(b""), "the file is empty"),
        ("b.csv.zst", b"\x28\xb5\x2f\xfd broken", "cannot be read as CSV"),
        ("b.txt", BATCH.encode(), "a data file must end in"),
    ],
    ids=["bad-gzip", "gzip-latin1", "gzip-empty", "bad-zstd", "suffix"],
)
def test_a_bad_compressed_file_is_a_data_error_naming_it(tmp_path, tiny, name, content, message):
    """A damaged or empty compressed file, or a file read directly with another suffix, is a DataError
    naming the file (not a gzip/zlib/polars traceback)."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_text_table(str(path), tiny.data)
    assert str(path) in str(err.value) and message in str(err.value)


def _types(params: Params) -> dict[str, str]:
    return {c.name: c.type for c in params.data.columns}


def test_the_same_rows_as_csv_and_parquet_are_repeats_not_conflicts(tmp_path, tiny):
    """Rows re-delivered as Parquet (typed: floats print as "0.0", dates as dates) are counted as repeated,
    not as key conflicts, when combine compares typed values; a changed value is still a conflict."""
    csv = HEADER + "1,2011-01-01,0,1,0,1,10\n2,2011-01-01,1 ,2,0.30,0.6,12\n3,2011-01-01,2,1,0.5,0.5,7\n"
    (tmp_path / "a.csv").write_text(csv)
    typed = pl.read_csv(csv.replace("1 ,", "1,").encode(), try_parse_dates=True).with_columns(
        pl.col("temp", "hum").cast(pl.Float64)
    )
    changed = typed.with_columns(y=pl.when(pl.col("id") == 3).then(8).otherwise(pl.col("y")))
    changed.write_parquet(tmp_path / "b.parquet")
    first = read_text_table(str(tmp_path / "a.csv"), tiny.data)
    again = read_text_table(str(tmp_path / "b.parquet"), tiny.data)
    assert again.filter(pl.col("id") == "1")["temp"].item() == "0.0"  # the spelling differs: "0" vs "0.0"

    result = combine([first, again], key=["id"], types=_types(tiny))
    assert result.raw.height == 3 and result.repeated_rows == 2
    assert result.conflicts["id"].to_list() == ["3"] and result.conflicts["y"].to_list() == ["8"]
    assert combine([first, again], key=["id"]).conflicts.height == 3  # compared as text, all three differ


@pytest.mark.parametrize(
    ("kind", "first", "later", "conflict"),
    [
        ("float", "1", "1.000", False),
        ("float", "1e-1", "0.1", False),
        ("float", "0.1", "0.10001", True),
        ("int", " 7", "7.0", False),
        ("bool", "true", "1", False),
        ("bool", "yes", "no", True),
        ("date", "2011-01-01", " 2011-01-01 ", False),
        ("str", "rain ", "rain", False),
        ("str", "rain", "Rain", True),
        ("float", "n/a", "n/a", False),
        ("float", "n/a", "N/A", True),
        ("float", "", None, False),
        ("float", "x", "1", True),
    ],
)  # fmt: skip
def test_typed_comparison_of_one_cell(kind, first, later, conflict):
    """A repeated key is a conflict exactly when a cell's typed value differs; cells that do not parse are
    compared as stripped text, and an empty cell equals a missing one."""

    def frame(value: str | None, row: int) -> pl.DataFrame:
        return pl.DataFrame(
            {"id": ["1"], "v": [value], "_source_file": [f"f{row}"], "_source_row": [row]},
            schema={"id": pl.String, "v": pl.String, "_source_file": pl.String, "_source_row": pl.Int64},
        )

    result = combine([frame(first, 1), frame(later, 2)], key=["id"], types={"id": "int", "v": kind})
    assert result.conflicts.height == int(conflict) and result.repeated_rows == int(not conflict)


DAYS = [dt.date(2011, 1, 2), dt.date(2011, 1, 2)]


@pytest.mark.parametrize(
    "day",
    [
        pl.Series("day", DAYS, pl.Date),
        pl.Series("day", DAYS, pl.Date).cast(pl.Datetime("ns")),  # pandas writes a date as a midnight
        pl.Series("day", DAYS, pl.Date).cast(pl.Datetime("us")).dt.replace_time_zone("Asia/Tokyo"),
    ],
    ids=["Date", "Datetime-midnight", "Datetime-midnight-in-its-zone"],
)
def test_a_parquet_batch_with_a_typed_date_column_is_cleaned_not_quarantined(project, day):
    """Promise: a Parquet batch whose `date` column is typed (Date, or Datetime as pandas writes dates) is read
    as the ISO dates a CSV would hold, and its rows reach data/clean. Attack: the real ingest and clean stages.
    Before: Datetime became "2011-01-02 00:00:00.000000", and clean quarantined every row with exit 0."""
    batch = pl.read_csv(BATCH.encode(), infer_schema=False).with_columns(day)
    batch.write_parquet(project.incoming / "b.parquet")
    ingest_stage.run(project)
    raw = pl.read_parquet(project.raw)
    assert raw.filter(pl.col("id").is_in(["3", "4"]))["day"].to_list() == ["2011-01-02", "2011-01-02"]
    clean_stage.run(project)
    clean = pl.read_parquet(project.clean)
    assert clean.filter(pl.col("id").is_in([3, 4]))["day"].to_list() == DAYS
    assert not project.quarantine.exists() or pl.read_parquet(project.quarantine).height == 0


def test_a_parquet_datetime_is_read_as_iso_text_in_utc(tmp_path, tiny_raw):
    """A Datetime cell of a `datetime` column becomes ISO text that clean parses back to the same instant (UTC
    for a value with a time zone, which a plain cast wrote as "... +09:00", unparseable)."""
    tiny_raw["data"]["columns"][0] = {"name": "id", "type": "datetime", "role": "id"}
    params = parse_params(tiny_raw)
    moment = dt.datetime(2011, 1, 2, 9, 30, 15, 250000)
    batch = pl.read_csv(BATCH.encode(), infer_schema=False).with_columns(
        pl.Series("id", [moment, moment]).dt.replace_time_zone("Asia/Tokyo")
    )
    batch.write_parquet(tmp_path / "b.parquet")
    text = read_text_table(str(tmp_path / "b.parquet"), params.data)["id"]
    assert text.to_list() == ["2011-01-02T00:30:15.250", "2011-01-02T00:30:15.250"]
    assert text.to_frame().select(parse_text(pl.col("id"), "datetime")).item(0, 0) == moment - dt.timedelta(hours=9)


def test_a_partition_whose_dates_never_parse_fails_clean_naming_the_file(project, capsys):
    """Promise: a batch of which a column parsed in no row (a format problem: date-times in a date column) fails the
    clean stage naming the file and the reason; its rows are in the quarantine for inspection. A batch whose
    rows were all quarantined for values out of range only gets a loud warning. Before: a one-line warning and
    exit 0 for both, the whole batch silently missing from training."""
    (project.incoming / "a-times.csv").write_text(BATCH.replace("2011-01-02", "2011-01-02 00:00:00.000000"))
    ingest_stage.run(project)
    with pytest.raises(DataError) as err:
        clean_stage.run(project)
    message = str(err.value)
    assert "a-times.csv (2 rows, every one 'unparseable:day')" in message and "\n" not in message
    assert pl.read_parquet(project.quarantine)["id"].to_list() == ["3", "4"]

    (project.incoming / "a-times.csv").unlink()
    (project.incoming / "b-odd-weather.csv").write_text(BATCH.replace(",0,1,", ",0,9,").replace(",1,3,", ",1,8,"))
    ingest_stage.run(project)
    clean_stage.run(project)  # values out of range are dirt, not a format problem
    out = capsys.readouterr().out
    assert "WARNING: every one of the 2 rows of data/incoming/b-odd-weather.csv was quarantined" in out, out
