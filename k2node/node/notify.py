"""systemd's readiness protocol (sd_notify): READY=1 once the node serves and its tasks run,
WATCHDOG=1 from the event loop (a loop that stalls stops pinging, and systemd restarts the
node), STOPPING=1 when a stop begins. Nothing happens without NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

from k2node.logs import get_logger

log = get_logger("k2node.node")


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        # an abstract socket is named with a leading @ (a NUL byte on the wire)
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        self.watchdog_s: float | None = None
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, state: str) -> None:
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(state.encode(), self._address)
        except OSError as exc:  # systemd gone or the socket wrong: say so once, go on
            log.warning("sd_notify_failed", socket=self._address, error=str(exc))
            self._address = ""
            self.close()

    async def watchdog(self) -> None:
        """Ping at half the watchdog interval while the loop runs."""
        if self.watchdog_s is None:
            return
        while self._address:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
