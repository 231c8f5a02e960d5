"""Where partition work runs (`evergreen.parallel`): the scheduler's address, in-process for small work, a
LocalCluster of real worker processes otherwise; results always in the order of the partitions."""

from __future__ import annotations

import os

import pytest

from evergreen.parallel import SCHEDULER_ENV, SYNCHRONOUS, run_partitions, runs_here, scheduler_address


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_the_environment_variable_wins_over_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert scheduler_address(None) is None
    assert scheduler_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:9999")
    assert scheduler_address("tcp://10.0.0.5:8786") == "tcp://127.0.0.1:9999"


def test_nothing_to_do_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:1")  # nothing listens: connecting would fail
    results, ran = run_partitions(_square_and_pid, [])
    assert results == [] and ran.describe() == "nothing to do"


@pytest.mark.parametrize(
    ("env", "items", "sizes"),
    [
        (SYNCHRONOUS, [1, 2, 3], ()),
        (None, [4], ()),
        ("tcp://127.0.0.1:1", [4], (10,)),  # nothing listens there: sending it would fail
        (None, [1, 2, 3], (10, 10, 10)),
    ],
    ids=["synchronous", "one-partition", "one-partition-with-a-scheduler-named", "small-inputs"],
)
def test_small_work_runs_in_this_process(monkeypatch: pytest.MonkeyPatch, env, items, sizes) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    if env:
        monkeypatch.setenv(SCHEDULER_ENV, env)
    results, ran = run_partitions(_square_and_pid, items, sizes=sizes, cluster_from=1000)
    assert [r for r, _ in results] == [x * x for x in items]
    assert {pid for _, pid in results} == {os.getpid()} and ran.where == "this process"


def test_a_named_cluster_gets_one_partition_only_when_it_is_large_or_needs_warm_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validation: a standing cluster's workers hold Great Expectations; this process would import it first."""
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    named = "tcp://10.0.0.5:8786"
    small, large = {"sizes": [10], "cluster_from": 1000}, {"sizes": [10**9], "cluster_from": 1000}
    assert runs_here(1, named, **small)  # work that imports nothing heavy stays here
    assert not runs_here(1, named, **small, needs_warm_workers=True)
    assert not runs_here(1, named, **large)  # the user named a cluster for work this size
    assert not runs_here(2, named, sizes=[10, 10], cluster_from=1000)  # the cluster works on them in parallel
    assert runs_here(1, None, **large, needs_warm_workers=True)  # a local cluster would import it too
    assert runs_here(3, SYNCHRONOUS, needs_warm_workers=True)


@pytest.mark.slow
def test_more_work_runs_on_a_local_cluster_of_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    items = list(range(6))
    results, ran = run_partitions(_square_and_pid, items, sizes=[10**6] * 6, cluster_from=1000, label="t")
    assert [r for r, _ in results] == [x * x for x in items]  # in the order of the items
    assert os.getpid() not in {pid for _, pid in results}  # done by worker processes
    assert "local cluster" in ran.where and sum(ran.workers.values()) == 6 and "local" not in ran.workers
