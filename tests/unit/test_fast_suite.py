"""The fast suite's layout (`REPORT_MODULES`, tests/harness.py): collecting it imports neither Evidently nor
Great Expectations, so that only the xdist worker that runs their tests pays for them (about 8 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import REPORT_MODULES, ROOT

HEAVY = ("evidently", "great_expectations")


def test_every_report_module_is_a_test_module_that_exists() -> None:
    """A renamed module would drop out of the group without a word, and its tests would spread over both
    workers again."""
    assert all((ROOT / path).is_file() and path.startswith("tests/") for path in REPORT_MODULES)


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
