"""The node's events: each meaningful step is logged and handed to every subscriber.

A subscriber has a bounded queue; one too slow to keep up loses its oldest events rather
than slowing the node down. The `/events` WebSocket is one such subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from k2node.logs import get_logger

log = get_logger("k2node.events")

QUEUE_SIZE = 1000

Subscription = asyncio.Queue[dict[str, Any]]


class EventHub:
    def __init__(self) -> None:
        self._queues: set[Subscription] = set()
        # called with each event as it is published (the metrics): quick, and never raising
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._soon: list[tuple[str, dict[str, Any]]] = []  # emit_soon's, not yet emitted

    def emit(self, event: str, **fields: Any) -> None:
        """Log `event` and publish it to every subscriber."""
        log.info(event, **fields)
        if self.listeners or self._queues:
            self.publish({"event": event, "time": time.time(), **fields})

    def emit_soon(self, event: str, **fields: Any) -> None:
        """Emit `event` once the callbacks ready to run now have run: the phases due now go
        out before their log lines. (One callback carries all the events of one moment.)"""
        if not self._soon:
            asyncio.get_running_loop().call_soon(self._emit_waiting)
        self._soon.append((event, fields))

    def _emit_waiting(self) -> None:
        waiting, self._soon = self._soon, []
        for event, fields in waiting:
            self.emit(event, **fields)

    def warn(self, event: str, **fields: Any) -> None:
        log.warning(event, **fields)
        if self.listeners or self._queues:
            self.publish({"event": event, "time": time.time(), "level": "warning", **fields})

    def publish(self, message: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(message)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()  # the slow subscriber loses its oldest event
            queue.put_nowait(message)

    def subscribe(self) -> Subscription:
        queue: Subscription = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        return queue

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def unsubscribe(self, queue: Subscription) -> None:
        self._queues.discard(queue)
