"""k2node.testing: a task's code on simulated nodes in virtual time, for its author's tests.

from k2node.testing import TaskHarness

async def test_rounds_pay(tmp_path):
    async with TaskHarness.start(MyTask, tmp_path, nodes=3) as h:
        await h.run_rounds(4)
        state = await h.state()
        assert state["distributions_audit_record"]["0"] == "PayoutSuccessful"
"""

from k2node.testing.clock import StuckError, VirtualClock
from k2node.testing.harness import SimNode, TaskHarness

__all__ = ["SimNode", "StuckError", "TaskHarness", "VirtualClock"]
