"""Issue 19, part 6: a month unattended, compressed, at small scale (`bench/bench_month.py`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_twenty_cycles_under_load_fail_no_request_and_stay_bounded(tmp_path):
    """Promise: while the real service answers steady traffic, 20 cycles (retention, monitor, retrain, gate,
    promote or discard) fail no request, record one decision each, promote at least 5 times, keep the server's
    memory flat (within 10% after warm-up), the log within its retention and the registry's files within
    `keep_versions` plus champion, fallback and the newest challenger."""
    out = tmp_path / "month.json"
    command = [sys.executable, str(ROOT / "bench" / "bench_month.py"), "--cycles", "20", "--rate", "4"]
    command += ["--keep-versions", "3", "--retention-cycles", "5", "--root", str(tmp_path / "p"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    month = json.loads(out.read_text())
    assert month["failed_requests"] == 0 and month["requests"] > 100, month["failures"]
    assert month["decisions"] == [1] * 20 and month["promotions"] >= 5
    assert abs(month["rss_change"]) <= 0.10, month["rss_mb"]
    assert month["max_versions_with_files"] <= 3 + 2 and month["registry_folders"] > 10
    # every request logged 1-3 rows: kept whole, the log would hold more rows than there were requests
    assert month["log_rows"][-1] < month["requests"], month["log_rows"]
