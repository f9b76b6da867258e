"""The Node.js `child_process.fork` channel: newline-delimited JSON over a socket pair."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from k2node import codec
from k2node.logs import get_logger

log = get_logger("k2node.ipc")

MAX_MESSAGE_BYTES = 1024 * 1024
# k2node's own message from a task to its node, once started: {TASK_LIMITS: {"maxRequestBody":
# bytes}}, the largest request body the node's proxy lets through to the task's routes.
TASK_LIMITS = "taskLimits"
# k2node's own first message from a node to a Python task: {TASK_SECRET: its namespace
# secret}, which then stays off the task's command line (readable by every local user).
TASK_SECRET = "taskSecret"


class IpcChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def over(cls, sock: socket.socket) -> IpcChannel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE_BYTES)
        return cls(reader, writer)

    async def send(self, message: dict[str, Any]) -> None:
        self._writer.write(codec.dumps(message) + b"\n")
        await self._writer.drain()

    async def receive(self) -> dict[str, Any] | None:
        """The next JSON object; None once the other end has closed."""
        while True:
            try:
                line = await self._reader.readline()
            except ValueError:  # a line over the limit: drop what was read of it
                log.warning("ipc_message_too_large", limit=MAX_MESSAGE_BYTES)
                continue
            except ConnectionError:
                return None
            if not line:
                return None
            try:
                message = codec.loads(line)
            except ValueError:
                log.warning("ipc_message_not_json", head=line[:80].decode(errors="replace"))
                continue
            if isinstance(message, dict):
                return message

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
