"""The relay's view of a WebSocket stream (k2node/node/http/wsrelay.py, Frames): from the
frames' headers alone, wherever the stream is cut into reads, it passes every byte of whole
frames in order, holds a header not yet whole, stops before a message over the cap, and
puts the node's own close between frames. Random streams, seeded."""

from __future__ import annotations

import os
import random

from k2node.node.http.wsrelay import PASSING, STOPPED, Frames, close_frame

TEXT, BINARY, CONTINUATION, CLOSE, PING = 1, 2, 0, 8, 9


def _frame(opcode: int, size: int, fin: bool, masked: bool) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = bytes((first, (0x80 if masked else 0) | size))
    elif size < 1 << 16:
        head = bytes((first, (0x80 if masked else 0) | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + size.to_bytes(8, "big")
    return head + (os.urandom(4) if masked else b"") + os.urandom(size)


def _stream(rng: random.Random, masked: bool) -> list[tuple[bytes, int, int, bool]]:
    """Frames (bytes, opcode, payload size, fin) of messages, some fragmented with pings
    between their fragments."""
    frames: list[tuple[bytes, int, int, bool]] = []
    for _ in range(rng.randint(1, 12)):
        parts = [rng.choice([0, 1, 5, 125, 126, 127, 300, 65535, 65536, 70_000])]
        parts += [rng.randint(0, 2000) for _ in range(rng.choice([0, 0, 1, 3]))]
        for i, size in enumerate(parts):
            opcode = rng.choice([TEXT, BINARY]) if i == 0 else CONTINUATION
            fin = i == len(parts) - 1
            frames.append((_frame(opcode, size, fin, masked), opcode, size, fin))
            if rng.random() < 0.3:
                ping = rng.randint(0, 125)
                frames.append((_frame(PING, ping, True, masked), PING, ping, True))
    return frames


def _stop_before(frames: list[tuple[bytes, int, int, bool]], cap: int) -> int | None:
    """Where a reader of whole messages must stop: the start of the first data frame that
    takes its message over `cap` (None: none does)."""
    pos = message = 0
    for raw, opcode, size, fin in frames:
        if opcode < 8:
            message = size if opcode else message + size
            if message > cap:
                return pos
            if fin:
                message = 0
        pos += len(raw)
    return None


def _feed(frames: Frames, data: bytes, rng: random.Random) -> bytes:
    passed = b""
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 100, 4096, 70_000])
        chunk, n = frames.scan(data[pos : pos + step])
        passed += chunk[:n]
        pos += step
    return passed


def test_whole_frames_pass_in_order_however_the_stream_is_cut() -> None:
    rng = random.Random(7)
    for case in range(200):
        data = b"".join(raw for raw, *_ in _stream(rng, masked=bool(case % 2)))
        frames = Frames(cap=1 << 30)
        assert _feed(frames, data, rng) == data, case
        assert (frames.state, frames.left, frames.held, frames.closed) == (PASSING, 0, b"", False)
    frames = Frames(cap=1 << 30)
    closing = close_frame(1000, "bye", masked=True)
    assert _feed(frames, closing, rng) == closing and frames.closed


def test_a_message_over_the_cap_stops_the_stream_before_its_first_byte() -> None:
    rng = random.Random(11)
    stopped = 0
    for case in range(300):
        stream = _stream(rng, masked=True)
        data = b"".join(raw for raw, *_ in stream)
        cap = rng.choice([size for _, opcode, size, _ in stream if opcode < 8] + [2000])
        frames = Frames(cap=cap)
        passed = _feed(frames, data, rng)
        stop = _stop_before(stream, cap)
        if stop is None:
            assert passed == data and not frames.over, case
        else:
            stopped += 1
            assert passed == data[:stop] and frames.over and frames.state == STOPPED, case
    assert stopped > 50  # the streams did break the cap often


def test_the_nodes_close_goes_at_the_end_of_the_frame_in_passage() -> None:
    rng = random.Random(13)
    for case in range(200):
        stream = _stream(rng, masked=False)
        data = b"".join(raw for raw, *_ in stream)
        ends = [sum(len(raw) for raw, *_ in stream[:i]) for i in range(len(stream) + 1)]
        cut = rng.randint(0, len(data))
        frames = Frames(cap=1 << 30)
        passed = _feed(frames, data[:cut], rng)
        held = len(frames.held)
        frames.pending = b"CLOSE"  # the node wants to close now
        chunk, n = frames.scan(data[cut:])
        passed += chunk[:n]
        assert frames.emit and frames.state == STOPPED, case
        assert len(passed) == min(e for e in ends if e >= cut - held), case
        assert data.startswith(passed), case
