"""A task that misbehaves a different way each round, beside a healthy one on the same node:
its work raises, hangs for good, floods its log, allocates without limit, or exits."""

from __future__ import annotations

import asyncio
import os
import sys

from k2node.examples.hello_task import HelloTask

WAYS = ("raise", "hang", "flood", "allocate", "exit")


class UnrulyTask(HelloTask):
    async def task(self, round_: int) -> None:
        way = WAYS[round_ % len(WAYS)]
        print(f"UNRULY {way} round {round_}", flush=True)
        if way == "raise":
            raise RuntimeError("the task's own bug")
        if way == "hang":
            await asyncio.Event().wait()  # never answers this phase
        if way == "flood":
            sys.stdout.write("flood\n" * 500_000 + "y" * 5_000_000 + "\n")
            sys.stdout.flush()
        if way == "allocate":
            held = []
            while True:  # until K2NODE_TASK_MEMORY_MB refuses it (MemoryError)
                held.append(b"x" * (32 << 20))
        if way == "exit":
            os._exit(0)  # the node starts it again, after a backoff
        await super().task(round_)
