"""The fast suite's xdist scheduler: the test modules that use Evidently or GX (`REPORT_MODULES`) as one unit of
work, every other test alone, so that only one worker imports those libraries.

pytest-xdist's own `--dist loadgroup` would do it, but 3.8 marks a test's group by rewriting a node attribute
that pytest 9.2 no longer has: its groups were spread over every worker without a word.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScopeScheduling

from tests.harness import REPORT_MODULES

REPORTS_SCOPE = "reports"


def report_scope(nodeid: str) -> str:
    """The unit of work a test belongs to: the reports together, every other test on its own."""
    return REPORTS_SCOPE if nodeid.split("::", 1)[0] in REPORT_MODULES else nodeid


class ReportsOnOneWorker(LoadScopeScheduling):
    """xdist's scope scheduler with `report_scope`. The largest unit, the reports, goes out first (xdist sorts
    units by size); the other tests follow one at a time as workers free up."""

    def _split_scope(self, nodeid: str) -> str:
        return report_scope(nodeid)

    def remove_node(self, node: Any) -> str | None:
        """As xdist's, except for a worker that crashed: the test it was running is reported as the crash and not
        sent again. (xdist's scope scheduler puts the whole unit back, crashed test included, and each new worker
        would crash on it in turn until xdist gives up on the run; its default scheduler drops it, as here.)"""
        workload = self.assigned_work.pop(node)
        pending = [(unit, nodeid) for unit in workload.values() for nodeid, done in unit.items() if not done]
        if not pending:
            return None
        unit, crashed = pending[0]
        unit[crashed] = True
        self.workqueue.update({scope: unit for scope, unit in workload.items() if not all(unit.values())})
        for other in self.assigned_work:
            self._reschedule(other)
        return crashed
