"""Partitions: each arrival is processed once, reused while unchanged, deduplicated against earlier ones through
the key index; bad input at scale (a corrupt partition, repeated ids, the same batch twice) and the
manifest-last protocol that keeps a half-written partition from being taken for done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from evergreen.config import parse_params
from evergreen.data import ingest_partitions, partitions
from evergreen.errors import DataError, ValidationFailed
from evergreen.parallel import SCHEDULER_ENV, SYNCHRONOUS
from evergreen.stages import clean as clean_stage
from evergreen.stages import ingest as ingest_stage
from evergreen.validation.stage import run_validation
from evergreen.validation.suites import write_suites
from evergreen.workspace import Workspace

HEADER = "id,day,hr,weather,temp,hum,y\n"


def _rows(first: int, n: int, day: str = "2011-01-01", y: int = 10) -> str:
    return "".join(f"{i},{day},{i % 24},{1 + i % 3},0.{i % 9 + 1},0.5,{y + i}\n" for i in range(first, first + n))


@pytest.fixture
def ws(tmp_path: Path, tiny_raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Workspace:
    # partitions run in this process here; tests/e2e/test_dask.py runs them on real Dask workers
    monkeypatch.setenv(SCHEDULER_ENV, SYNCHRONOUS)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "source.csv").write_text(HEADER + _rows(1, 30))
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    workspace = Workspace(tmp_path, parse_params(tiny_raw))
    write_suites(workspace.params.data, workspace.suites_dir)
    return workspace


def _land(ws: Workspace, name: str, text: str) -> Path:
    path = ws.incoming / name
    path.write_text(text)
    return path


def _part_files(dataset: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in partitions.parts(dataset)}


def _pipeline(ws: Workspace) -> None:
    ingest_stage.run(ws)
    run_validation(ws, "raw", ws.raw)
    clean_stage.run(ws)
    run_validation(ws, "clean", ws.clean)


def test_an_arrival_is_processed_alone_and_earlier_parts_are_reused(ws: Workspace, capsys) -> None:
    _land(ws, "2011-01-02.csv", HEADER + _rows(31, 10, "2011-01-02"))
    _pipeline(ws)
    before = {d: _part_files(d) for d in (ws.raw, ws.clean, ws.quarantine)}
    assert len(before[ws.raw]) == 2 and len(before[ws.clean]) == 2
    capsys.readouterr()
    _land(ws, "2011-01-03.csv", HEADER + _rows(41, 5, "2011-01-03"))
    _pipeline(ws)
    out = capsys.readouterr().out
    assert "3 partition(s), 1 new or changed" in out
    assert "(3 partition(s), 1 cleaned now" in out
    assert "in 3 partition(s), 1 validated now" in out
    for dataset, old in before.items():
        now = _part_files(dataset)
        assert len(now) == 3 and all(now[name] == mtime for name, mtime in old.items())  # untouched
    clean = pl.read_parquet(ws.clean)
    assert clean["id"].to_list() == list(range(1, 46))  # in arrival order
    # nothing changed: nothing is computed again
    capsys.readouterr()
    _pipeline(ws)
    out = capsys.readouterr().out
    assert "0 new or changed" in out and "0 cleaned now" in out and out.count("0 validated now") == 2


def test_changing_a_cleaning_rule_rebuilds_every_clean_partition(ws: Workspace, tiny_raw, capsys) -> None:
    _land(ws, "b.csv", HEADER + _rows(31, 10))
    _pipeline(ws)
    raw_before, clean_before = _part_files(ws.raw), _part_files(ws.clean)
    tiny_raw["clean"] = {"drop_duplicates": False}
    changed = Workspace(ws.root, parse_params(tiny_raw))
    capsys.readouterr()
    ingest_stage.run(changed)
    clean_stage.run(changed)
    out = capsys.readouterr().out
    assert "0 new or changed" in out and "(2 partition(s), 2 cleaned now" in out
    assert _part_files(ws.raw) == raw_before
    assert not set(_part_files(ws.clean)) & set(clean_before)  # every clean part made again, old ones gone


def test_ids_repeated_from_old_partitions_are_conflicts_and_the_old_rows_win(ws: Workspace, tiny_raw) -> None:
    ingest_stage.run(ws)
    before = _part_files(ws.raw)
    # ids 1-4 again: 1 and 2 with another target (conflicts), 3 exactly as before and 4 with the same values
    # spelled otherwise ("0.50 ", "14.0": re-deliveries, as `combine` judges within a file); 31 is new
    repeat = HEADER + "1,2011-01-01,1,2,0.2,0.5,999\n2,2011-01-01,2,3,0.3,0.5,999\n" + _rows(3, 1)
    repeat += "4,2011-01-01,4,2,0.50 ,0.5,14.0\n" + _rows(31, 1)
    _land(ws, "late.csv", repeat)
    with pytest.raises(DataError, match=r"2 of 35 rows \(5\.7%\) repeat the key id .*late\.csv, _source_row=1"):
        ingest_stage.run(ws)  # above the declared share: nothing of the run is kept
    assert _part_files(ws.raw) == before
    ws = Workspace(ws.root, parse_params({**tiny_raw, "ingest": {"max_key_conflicts": 0.1}}))
    ingest_stage.run(ws)
    raw = pl.read_parquet(ws.raw)
    assert raw.height == 31 and raw.filter(pl.col("id").is_in(["1", "2"]))["y"].to_list() == ["11", "12"]
    conflicts = pl.read_parquet(ws.raw_conflicts)
    assert conflicts["id"].to_list() == ["1", "2"] and conflicts["y"].to_list() == ["999", "999"]
    assert conflicts[partitions.PARTITION].unique().to_list() == [conflicts[partitions.PARTITION][0]]
    assert conflicts[partitions.PARTITION][0].startswith("late.csv-")
    metrics = json.loads(ws.ingest_metrics.read_text())
    assert metrics["key_conflicts"] == 2 and metrics["repeated_rows_dropped"] == 2
    late = next(v for k, v in metrics["partitions"].items() if k.startswith("late.csv-"))
    assert late == {"file": "data/incoming/late.csv", "rows_read": 5, "rows_out": 1,
                    "repeated_rows_dropped": 2, "key_conflicts": 2}  # fmt: skip


def test_the_key_index_finds_repeated_ids_outside_the_new_ids_range_and_ids_that_are_not_integers(
    ws: Workspace, tiny_raw
) -> None:
    # the index skips parts by the range of integer ids (ingest.key_int): a repeat far below the new ids, and
    # an id that does not parse as an integer (so it has no range), must still be found in earlier partitions
    ws = Workspace(ws.root, parse_params({**tiny_raw, "ingest": {"max_key_conflicts": 0.5}}))
    _land(ws, "a.csv", HEADER + "x7,2011-01-01,1,2,0.2,0.5,70\n" + _rows(100, 5))
    ingest_stage.run(ws)
    # ids 2 (from source.csv) and x7 (from a.csv) with another target, among new ids 1000-1004
    later = HEADER + "2,2011-01-01,2,3,0.3,0.5,999\nx7,2011-01-01,1,2,0.2,0.5,999\n" + _rows(1000, 5)
    _land(ws, "b.csv", later)
    ingest_stage.run(ws)
    conflicts = pl.read_parquet(ws.raw_conflicts)
    assert sorted(conflicts["id"].to_list()) == ["2", "x7"]
    raw = pl.read_parquet(ws.raw)
    assert raw.filter(pl.col("id").is_in(["2", "x7"]))["y"].to_list() == ["12", "70"]  # the first rows won
    assert raw.height == 30 + 6 + 5
    # the index parts carry the integer id (null where it does not parse)
    keys = pl.read_parquet(partitions.parts(ws.root / "data" / "raw" / "keys")[1])
    assert keys.filter(pl.col("id") == "x7")["_key_int"].to_list() == [None]


def test_the_same_batch_under_two_names_is_added_once_and_said_so(ws: Workspace, capsys) -> None:
    batch = HEADER + _rows(31, 10)
    _land(ws, "a.csv", batch)
    _land(ws, "a-again.csv", batch)
    ingest_stage.run(ws)
    out = capsys.readouterr().out
    assert "data/incoming/a.csv has the same bytes as data/incoming/a-again.csv: not added again" in out
    assert pl.read_parquet(ws.raw).height == 40 and len(partitions.parts(ws.raw)) == 2
    metrics = json.loads(ws.ingest_metrics.read_text())
    assert metrics["duplicate_files"] == {"data/incoming/a.csv": "data/incoming/a-again.csv"}


def test_a_corrupt_partition_is_refused_by_name_and_the_others_are_kept(ws: Workspace, capsys) -> None:
    for day in range(2, 6):
        _land(ws, f"2011-01-0{day}.csv", HEADER + _rows(day * 100, 5, f"2011-01-0{day}"))
    bad = _land(ws, "2011-01-03b.csv", "id,day\n1,2011-01-03\n")
    with pytest.raises(DataError, match=r"refused .*2011-01-03b\.csv: the columns differ.*\n.*other 5 partition"):
        ingest_stage.run(ws)
    assert pl.read_parquet(ws.raw).height == 30 + 4 * 5  # every good arrival is in
    kept = _part_files(ws.raw)
    bad.unlink()
    capsys.readouterr()
    ingest_stage.run(ws)
    # the arrivals before the refused one are reused; the two after it are redone, because which of their rows
    # are new depended on every earlier arrival's content (a cost of a rare case, never a wrong answer)
    assert "5 partition(s), 2 new or changed" in capsys.readouterr().out
    assert sorted(kept)[:3] == sorted(_part_files(ws.raw))[:3]


def test_a_partition_failing_its_suite_is_named_and_the_others_stay_validated(ws: Workspace, capsys) -> None:
    _land(ws, "good.csv", HEADER + _rows(31, 10))
    _land(ws, "junk.csv", HEADER + "".join(f"{i},2011-01-01,0,1,0.2,0.5,lots\n" for i in range(50, 60)))
    ingest_stage.run(ws)
    with pytest.raises(ValidationFailed, match=r"'y'.*in partition\(s\) 000002-junk\.csv-"):
        run_validation(ws, "raw", ws.raw)
    report = json.loads(ws.validation_report("raw").read_text())
    assert [p["critical_success"] for p in report["partitions"]] == [True, True, False]
    assert report["row_count"] == 50 and (ws.root / report["docs"]).is_file()
    assert all((ws.root / p["docs"]).is_file() for p in report["partitions"])
    capsys.readouterr()
    with pytest.raises(ValidationFailed):
        run_validation(ws, "raw", ws.raw)
    assert "0 validated now" in capsys.readouterr().out  # each partition is validated once


def test_quarantine_and_metrics_say_which_partition_each_row_came_from(ws: Workspace) -> None:
    _land(ws, "dirty.csv", HEADER + "90,2011-01-01,0,9,0.2,0.5,1\n91,2011-01-01,0,1,0.2,0.5,2\n")
    ingest_stage.run(ws)
    clean_stage.run(ws)
    quarantine = pl.read_parquet(ws.quarantine)
    assert quarantine["id"].to_list() == ["90"] and quarantine[partitions.PARTITION][0].startswith("dirty.csv-")
    metrics = json.loads(ws.data_metrics.read_text())
    assert metrics["rows_quarantined"] == 1 and metrics["rows_out"] == 31
    dirty = next(v for k, v in metrics["partitions"].items() if k.startswith("dirty.csv-"))
    assert dirty["quarantined_by_reason"] == {"out_of_range:weather": 1}


def test_a_part_left_by_a_killed_run_is_never_taken_for_done(ws: Workspace, capsys) -> None:
    ingest_stage.run(ws)
    clean_stage.run(ws)
    _land(ws, "b.csv", HEADER + _rows(31, 10))
    # what a worker killed after writing its raw part but before the manifest leaves behind: a full part (and a
    # half-written temporary file) that no manifest names
    listed = ["in/source.csv", "data/incoming/b.csv"]
    planned = ingest_partitions.plan(listed, ws.params.data, ws.root)[1]
    assert planned.path == "data/incoming/b.csv"
    stray = partitions.part_path(ws.raw, planned.name)
    pl.DataFrame({"id": ["junk"]}).write_parquet(stray)
    partitions.staging_dir(ws.raw).mkdir(exist_ok=True)
    (partitions.staging_dir(ws.raw) / f".{planned.name}.parquet.tmp").write_bytes(b"PAR1 half")
    capsys.readouterr()
    ingest_stage.run(ws)
    assert "1 new or changed" in capsys.readouterr().out  # computed again, not reused
    assert pl.read_parquet(stray)["id"].to_list() == [str(i) for i in range(31, 41)]
    assert not partitions.staging_dir(ws.raw).exists()


def test_a_part_missing_from_its_folder_is_computed_again(ws: Workspace, capsys) -> None:
    _land(ws, "b.csv", HEADER + _rows(31, 10))
    ingest_stage.run(ws)
    clean_stage.run(ws)
    partitions.parts(ws.clean)[1].unlink()
    capsys.readouterr()
    clean_stage.run(ws)
    assert "1 cleaned now" in capsys.readouterr().out and pl.read_parquet(ws.clean).height == 40


def test_a_single_file_left_by_an_earlier_version_is_replaced_by_a_dataset(ws: Workspace) -> None:
    ws.raw.parent.mkdir(parents=True)
    pl.DataFrame({"id": ["old"]}).write_parquet(ws.raw)  # raw.parquet as one file, as before partitions
    ingest_stage.run(ws)
    assert ws.raw.is_dir() and pl.read_parquet(ws.raw).height == 30


def test_clean_without_ingest_says_what_to_run(ws: Workspace) -> None:
    with pytest.raises(DataError, match=r"data/raw/manifest\.json: no raw partitions \(run `dvc repro ingest`"):
        clean_stage.run(ws)


def test_in_two_passes_a_later_partition_may_be_deduplicated_first(ws: Workspace) -> None:
    # on a cluster, pass 2 of a later arrival can run before an earlier one's raw part exists: a conflict with
    # that earlier arrival is judged against its staged rows
    _land(ws, "b.csv", HEADER + _rows(31, 10))
    _land(ws, "c.csv", HEADER + "35,2011-01-01,0,1,0.2,0.5,999\n" + _rows(41, 2))
    layout = ingest_stage._layout(ws)
    listed = ["in/source.csv", "data/incoming/b.csv", "data/incoming/c.csv"]
    arrivals = ingest_partitions.plan(listed, ws.params.data, ws.root)
    tasks = [ingest_partitions.Task(a, ws.params.data, layout, root=str(ws.root)) for a in arrivals]
    first_pass = [ingest_partitions.stage_arrival(t) for t in tasks]
    keys = [str(partitions.part_path(ws.raw_keys, a.name)) for a in arrivals]
    last = ingest_partitions.Task(arrivals[2], ws.params.data, layout, keys[:2], str(ws.root))
    result = ingest_partitions.dedup_arrival(last, first_pass[2])
    assert not partitions.part_path(ws.raw, arrivals[1].name).exists()  # b's raw part is not made yet
    assert result["key_conflicts"] == 1 and result["rows_out"] == 2


def test_a_files_hash_is_reused_while_its_stamp_holds_and_taken_again_when_it_changes(tmp_path: Path) -> None:
    """The stamp (size, mtime, ctime, inode, device) stands for the bytes: a kept digest is returned while it
    holds. A same-size rewrite whose mtime was set back, a file renamed over it, a malformed entry and a URL
    are hashed again; a file changed just now is not kept (it could change again within its clock's tick)."""
    path = tmp_path / "a.csv"
    path.write_text(HEADER)
    later = partitions.file_stamp(str(path))[2] + 10**10  # 10 s after the file changed

    def digest(known: dict[str, Any]) -> str:
        return partitions.content_hashes([str(path)], known, later)[0][str(path)]

    digests, keep = partitions.content_hashes([str(path)], {}, later)
    assert digests == {str(path): partitions.content_hash(str(path))}
    assert keep == {str(path): [*partitions.file_stamp(str(path)), digests[str(path)]]}
    believed = "f" * 64  # what the cache holds is believed while the stamp holds: the file is not read
    assert digest({str(path): [*partitions.file_stamp(str(path)), believed]}) == believed
    for malformed in ([*partitions.file_stamp(str(path))], {"x": 1}, [*partitions.file_stamp(str(path)), 12345]):
        assert digest({str(path): malformed}) == digests[str(path)]
    assert partitions.content_hashes([str(path)], {}, partitions.file_stamp(str(path))[2] + 10**9)[1] == {}

    stamp = partitions.file_stamp(str(path))
    path.write_text(HEADER.upper())  # the same size, rewritten in place, its mtime then set back
    os.utime(path, ns=(stamp[1], stamp[1]))
    assert partitions.file_stamp(str(path))[:2] == stamp[:2]
    later = partitions.file_stamp(str(path))[2] + 10**10
    assert digest({str(path): [*stamp, believed]}) == partitions.content_hash(str(path)) != digests[str(path)]
    other = tmp_path / "b.csv"  # the same bytes, size and mtime, renamed over it: a new inode
    other.write_text(HEADER.upper())
    os.utime(other, ns=(stamp[1], stamp[1]))
    stamp = partitions.file_stamp(str(path))
    os.replace(other, path)
    assert digest({str(path): [*stamp, believed]}) == partitions.content_hash(str(path))
    assert partitions.file_stamp("memory://a.csv") is None and partitions.file_stamp(str(tmp_path / "gone")) is None


def test_the_hash_cache_file_only_saves_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept in a JSON file between runs; a damaged one, an unwritable one or none leaves every file hashed."""
    monkeypatch.setattr(partitions, "RACY_NS", -(10**18))  # keep the hash of a file written just now
    path, cache = tmp_path / "a.csv", tmp_path / "cache" / "digests.json"
    path.write_text(HEADER)
    expected = {str(path): partitions.content_hash(str(path))}
    assert partitions.cached_content_hashes([str(path)], cache) == expected
    assert json.loads(cache.read_text())[str(path)][-1] == expected[str(path)]
    cache.write_text("{not json")
    assert partitions.cached_content_hashes([str(path)], cache) == expected
    blocked = tmp_path / "a-file" / "digests.json"  # its folder cannot be made: a file is in the way
    (tmp_path / "a-file").write_text("")
    assert partitions.cached_content_hashes([str(path)], blocked) == expected
    assert partitions.cached_content_hashes([str(path)], None) == expected


def test_in_a_dvc_project_the_stages_keep_their_inputs_hashes_and_an_edited_source_is_seen(
    ws: Workspace, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws.root / ".dvc").mkdir()
    monkeypatch.setattr(partitions, "RACY_NS", -(10**18))  # keep the hashes of files written just now
    _pipeline(ws)
    for stage in ("ingest", "validate_raw", "validate_clean"):
        assert len(json.loads(ws.digest_cache(stage).read_text())) == 1  # the one source file, or its one part
    source = ws.root / "in" / "source.csv"
    source.write_text(HEADER + _rows(1, 29) + _rows(30, 1, y=500))  # the last row's target edited
    capsys.readouterr()
    _pipeline(ws)
    assert "1 new or changed" in capsys.readouterr().out
    assert pl.read_parquet(ws.raw).filter(pl.col("id") == "30")["y"].to_list() == ["530"]
