"""A WebSocket relayed between a client and a task's server as bytes: the handshake is
passed on (the task answers the client's own key), then frames go through as they came,
masked from the client, unmasked from the task, never decoded.

Only the frames' headers are read, for three things: a message over the size cap (closed
with 1009 before any of it passes), whether a close frame has passed, and where a frame
ends, so that a close of the node's own goes in between frames: 1011 when the task's
connection drops without one, 1001 when the client's does or the node stops. Backpressure
holds each side's reading while the other side's writes are waiting.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from k2node.node.http.upstream import Connection

GOING_AWAY, INTERNAL_ERROR, TOO_BIG = 1001, 1011, 1009
CLOSE_WAIT_S = 1.0  # for a side to follow the other's close, or a frame to end for the node's


def close_frame(code: int, reason: str, masked: bool) -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode()[:120]  # a close frame's reason: < 124
    if not masked:
        return bytes((0x88, len(payload))) + payload
    mask = os.urandom(4)
    hidden = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask + hidden


PASSING, STOPPED, SHUT = 0, 1, 2  # a direction's states: STOPPED between frames, nothing
# of the node's sent yet; SHUT once the node's close has gone, or the other side is gone


class Frames:
    """One direction of a relay, seen through its frames' headers."""

    __slots__ = ("cap", "closed", "emit", "held", "left", "message", "over", "pending", "state")

    def __init__(self, cap: int) -> None:
        self.cap = cap  # bytes in one message
        self.state = PASSING
        self.left = 0  # payload bytes of the current frame still to come
        self.held = b""  # the start of a frame header, until it is whole
        self.message = 0  # payload bytes of the message being fragmented so far
        self.pending: bytes | None = None  # the node's close, to go at the next frame's end
        self.emit = False  # `pending` is due now
        self.over = False  # a message broke the cap
        self.closed = False  # the source sent a close frame

    def scan(self, data: bytes) -> tuple[bytes, int]:
        """Walk `data`'s frames: returns it (held bytes in front) and how much of it may
        pass: all but a header not yet whole, or up to where passing stops."""
        if self.held:
            data, self.held = self.held + data, b""
        end = len(data)
        pos = n = 0
        passing = self.state == PASSING
        while True:
            left = self.left
            if left:
                if end - pos <= left:
                    self.left = left - (end - pos)
                    pos = end
                    break
                pos += left
                self.left = 0
            if passing and self.pending is not None:  # between frames: the close goes now
                n, passing, self.emit, self.state = pos, False, True, STOPPED
            if end - pos < 2:
                self.held = data[pos:]
                break
            second = data[pos + 1]
            size = second & 0x7F
            start = (
                pos + (6 if second & 0x80 else 2) + (2 if size == 126 else 8 if size == 127 else 0)
            )
            if start > end:
                self.held = data[pos:]
                break
            if size == 126:
                size = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif size == 127:
                size = int.from_bytes(data[pos + 2 : pos + 10], "big")
            first = data[pos]
            opcode = first & 0x0F
            if opcode == 8:
                self.closed = True
            elif opcode < 8 and passing:
                total = size + (self.message if opcode == 0 else 0)
                if total > self.cap:  # none of this frame passes
                    n, passing, self.over, self.state = pos, False, True, STOPPED
                self.message = 0 if first & 0x80 else total
            pos = start
            self.left = size
        if passing and self.pending is not None and not self.left:
            passing, self.emit, self.state = False, True, STOPPED
            n = end - len(self.held)
        elif passing:
            n = end - len(self.held)
        return data, n


class WebSocketRelay:
    """Bytes between the client's connection (aiohttp's, fed to `feed_data` as its
    upgraded protocol) and the task's (`Connection`, raw after the 101)."""

    def __init__(self, request: web.BaseRequest, task: Connection, cap: int) -> None:
        transport = request.transport
        assert transport is not None
        self._protocol = request.protocol
        self._client = transport
        self._task = task
        self._down = Frames(cap)  # client -> task
        self._up = Frames(cap)  # task -> client
        self._client_open = self._task_open = True
        self._writer: AbstractStreamWriter | None = None
        self._draining: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, writer: AbstractStreamWriter) -> None:
        """The 101 is written: bytes flow both ways from here."""
        self._writer = writer
        task = self._task
        task.raw_sink, task.raw_lost = self._from_task, self._task_lost
        task.raw_resume = self._resume_client
        # aiohttp hands every later byte of the client's connection to feed_data
        self._protocol.set_parser(self)  # type: ignore[arg-type]
        self._protocol.keep_alive(False)
        if task.tail:
            self._from_task(task.tail)
        if task.lost:  # it went while the 101 was being written
            self._task_lost()
        else:
            task.resume_reading()

    def stop(self, code: int = GOING_AWAY, reason: str = "the node is stopping") -> None:
        """Close both sides with the node's own close frame."""
        self._inject(self._down, close_frame(code, reason, masked=True))
        self._inject(self._up, close_frame(code, reason, masked=False))

    def abort(self) -> None:
        self._client.abort()
        self._task.abort()
        if self._draining is not None:
            self._draining.cancel()

    # -- the client's side -------------------------------------------------------------------
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        data, n = self._down.scan(data)
        if n:
            self._to_task(data if n == len(data) else data[:n])
        self._after_scan(self._down)
        return False, b""

    def feed_eof(self) -> None:
        self._client_open = False
        self._up.state = SHUT
        if not self._down.closed:
            if self._down.left:  # mid-frame: no close of ours can follow it
                self._task.abort()
            else:
                self._inject(self._down, close_frame(GOING_AWAY, "the client went away", True))
        if self._up.closed:
            self._task.close()
        self._ending()

    def _to_task(self, data: bytes) -> None:
        if self._task.closing:
            return
        self._task.write(data)
        if self._task.write_paused:
            self._protocol.pause_reading()

    def _resume_client(self) -> None:
        if self._client_open:
            self._protocol.resume_reading()

    # -- the task's side ---------------------------------------------------------------------
    def _from_task(self, data: bytes) -> None:
        data, n = self._up.scan(data)
        if n:
            self._to_client(data if n == len(data) else data[:n])
        self._after_scan(self._up)

    def _task_lost(self) -> None:
        self._task_open = False
        self._down.state = SHUT
        if not self._up.closed:
            if self._up.left:
                self._client.abort()
            else:
                self._inject(self._up, close_frame(INTERNAL_ERROR, "the task went away", False))
        if self._down.closed:
            self._client.close()
        self._ending()

    def _to_client(self, data: bytes) -> None:
        if self._client.is_closing():
            return
        self._client.write(data)
        if self._protocol.writing_paused and self._draining is None:
            self._task.pause_reading()
            self._draining = asyncio.ensure_future(self._client_drained())

    async def _client_drained(self) -> None:
        assert self._writer is not None
        try:
            await self._writer.drain()
        except ConnectionError:
            return
        finally:
            self._draining = None
        self._task.resume_reading()

    # -- both ----------------------------------------------------------------------------
    def _after_scan(self, frames: Frames) -> None:
        if frames.emit and frames.pending is not None:
            frames.emit = False
            self._inject(frames, frames.pending)
        if frames.over:
            frames.over = False
            self.stop(TOO_BIG, "message too big")
        if frames.state == SHUT and frames.closed:
            # its source has answered the node's close (or has nobody left to talk to)
            (self._client if frames is self._down else self._task).close()

    def _inject(self, frames: Frames, frame: bytes) -> None:
        """The node's close frame into one direction, between frames, and that side's
        connection closed after it (no reply is waited for: the node has nothing more to
        say or to pass)."""
        if frames.state == SHUT:
            return
        if frames.state == PASSING and frames.left:
            frames.pending = frame
        else:
            frames.state, frames.pending = SHUT, None
            if frames is self._down:
                self._to_task(frame)
                self._task.close()
            else:
                self._to_client(frame)
                self._client.close()
        self._ending()

    def _ending(self) -> None:
        """Each side gets CLOSE_WAIT_S to answer the node's close or to go."""
        if not self._client_open and not self._task_open:
            if self._timer is not None:
                self._timer.cancel()
            if not self.finished.done():
                self.finished.set_result(None)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_WAIT_S, self.abort)
