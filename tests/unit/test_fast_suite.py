"""The fast suite's layout (`REPORT_MODULES`, tests/harness.py): collecting it imports neither Evidently nor
Great Expectations, so that only the xdist worker that runs their tests pays for them (about 8 s)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import OrderedDict

import pytest

from tests.harness import REPORT_MODULES, ROOT
from tests.scheduling import REPORTS_SCOPE, ReportsOnOneWorker, report_scope

HEAVY = ("evidently", "great_expectations")


def test_every_report_module_is_a_test_module_that_exists() -> None:
    """A renamed module would drop out of the group without a word, and its tests would spread over both
    workers again."""
    assert all((ROOT / path).is_file() and path.startswith("tests/") for path in REPORT_MODULES)


def test_every_module_that_imports_on_first_use_is_a_report_module() -> None:
    """One left out would still import its library late, but on whichever worker runs it: both would pay."""
    users = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("test_*.py")
        if re.search(r"^\w+ = imported_when_used\(", path.read_text(), re.MULTILINE)
    }
    assert users and users <= REPORT_MODULES, users - REPORT_MODULES


def test_the_report_modules_are_one_unit_of_work_and_every_other_test_is_its_own() -> None:
    module = sorted(REPORT_MODULES)[0]
    assert report_scope(f"{module}::test_a[x-1]") == report_scope(f"{module}::C::test_b") == REPORTS_SCOPE
    other = "tests/unit/test_layers.py::test_no_two_packages_import_each_other"
    assert report_scope(other) == other


def test_a_test_that_crashes_its_worker_is_reported_and_not_sent_again() -> None:
    """xdist's scope scheduler would put it back with its unit, and each new worker would crash on it in turn."""
    scheduler = object.__new__(ReportsOnOneWorker)  # only the state that `remove_node` reads
    crashed, alive = object(), object()
    scheduler.assigned_work = {
        crashed: {REPORTS_SCOPE: {"r::a": True, "r::b": False, "r::c": False}, "t::x": {"t::x": True}},
        alive: {},
    }
    scheduler.workqueue = OrderedDict()
    rescheduled = []
    scheduler._reschedule = rescheduled.append
    assert scheduler.remove_node(crashed) == "r::b"
    assert scheduler.workqueue == {REPORTS_SCOPE: {"r::a": True, "r::b": True, "r::c": False}}  # c runs, b not
    assert rescheduled == [alive] and crashed not in scheduler.assigned_work
    assert scheduler.remove_node(alive) is None  # a worker that finished its work


@pytest.mark.slow  # collects every fast test in a fresh interpreter (about 10 s)
def test_collecting_the_fast_tests_imports_neither_evidently_nor_great_expectations() -> None:
    """Without xdist, too: the conftest's scheduler hook is xdist's, and `-p no:xdist` must still run."""
    code = (
        "import sys, pytest\n"
        "code = pytest.main(['--collect-only', '-q', '-m', 'not slow', '-p', 'no:cacheprovider', '-p', 'no:xdist'])\n"
        f"print('imported:', sorted(set({HEAVY!r}) & set(sys.modules)), 'exit', int(code))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    verdict = [line for line in done.stdout.splitlines() if line.startswith("imported:")]
    assert verdict == ["imported: [] exit 0"], done.stdout[-3000:] + done.stderr[-2000:]
