"""`python -m k2node.task ...`: the entry point of a task process."""

from __future__ import annotations

import os
import sys

from k2node.contract.launch import CHANNEL_FD_ENV, TASK_ENTRY_ENV, TaskArgs
from k2node.eventloop import run_main
from k2node.logs import configure_logging
from k2node.task.namespace import NamespaceError
from k2node.task.runner import TaskStartError, run_task


def main() -> int:
    configure_logging(os.environ.get("K2NODE_LOG_FORMAT", "auto"))
    try:
        args = TaskArgs.parse(sys.argv[1:])
        entry = os.environ.get(TASK_ENTRY_ENV, "")
        fd = int(os.environ.get(CHANNEL_FD_ENV, ""))
        return run_main(run_task(args, entry, fd))
    except (TaskStartError, ValueError) as exc:  # cannot work (a bad loop setting too): exit 1
        print(f"k2node task: {exc}", file=sys.stderr)
        return 1
    except NamespaceError as exc:  # the node was not ready: exit 0 asks for a restart
        print(f"k2node task: {exc}", file=sys.stderr)
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
