"""The heads of the proxy's hop: the client's request as the task's server gets it, the
task's answer as the client gets it, and the client's 101 from the task's."""

from __future__ import annotations

import base64
import hashlib
import re

from aiohttp import web

from k2node.http_errors import HttpError
from k2node.node.http.upstream import Connection, UpstreamError

# Hop-by-hop headers are the proxy's own business, never forwarded (RFC 9110, 7.6.1).
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"host",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
        b"trailer",
    }
)
# The node frames each request itself, has answered any Expect, and adds its own hop.
NOT_PASSED = _HOP | {
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
}
# No compression through the relay: its size cap reads the frames' lengths.
NOT_PASSED_UP = NOT_PASSED | {b"sec-websocket-extensions"}
ANSWER_NOT_PASSED = _HOP | {b"content-length"}
UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses in a head


def switched(request: web.Request, conn: Connection) -> web.StreamResponse:
    """The client's 101, from the task's: its accept checked against the client's key."""
    if not conn.upgraded or conn.status != 101:
        conn.abort()
        status = conn.status if 400 <= conn.status < 600 else 502
        raise HttpError(status, f"the task refused the WebSocket ({conn.status})")
    answer = {name.lower(): value for name, value in conn.headers}
    key = request.headers["Sec-WebSocket-Key"].encode()
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    if answer.get(b"sec-websocket-accept") != accept:
        raise UpstreamError(502, "the task's WebSocket handshake is not valid")
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": accept.decode(),
    }
    protocol = answer.get(b"sec-websocket-protocol")
    if protocol is not None and CONTROL.search(protocol) is None:
        headers["Sec-WebSocket-Protocol"] = text(protocol)
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    return response


def task_target(request: web.BaseRequest) -> str:
    """The request's target with `/task/<id>` taken off, as the client wrote it."""
    raw = request.raw_path
    if not raw.startswith("/"):  # absolute-form: http://host/task/...
        url = request.rel_url
        raw = url.raw_path + (f"?{url.raw_query_string}" if url.raw_query_string else "")
    parts = raw.split("/", 3)
    return "/" + parts[3] if len(parts) > 3 else "/"


def upstream_head(
    request: web.BaseRequest, target: str, host: str, dropped: frozenset[bytes], extra: bytes
) -> bytes:
    """The request's head for the task's server: its end-to-end headers as they came, with
    this hop added to X-Forwarded-For and Forwarded (RFC 7239)."""
    named = request.headers.getall("Connection", ())
    if named:
        tokens = {
            t.strip().lower().encode("latin-1", "replace") for v in named for t in v.split(",")
        }
        dropped = dropped | tokens
    first = f"{request.method} {target} HTTP/1.1\r\nHost: {host}\r\n"
    parts = [first.encode("utf-8", "surrogateescape")]
    for name, value in request.raw_headers:
        if name.lower() not in dropped:
            parts += (name, b": ", value, b"\r\n")
    remote = request.remote or "unknown"
    scheme = request.scheme
    prior = request.headers.get("X-Forwarded-For")
    hop = [f"X-Forwarded-For: {prior}, {remote}" if prior else f"X-Forwarded-For: {remote}"]
    hop.append(f"X-Forwarded-Proto: {scheme}")
    node = f'"[{remote}]"' if ":" in remote else remote
    element = f"for={node};proto={scheme}"
    if request.host:
        hop.append(f"X-Forwarded-Host: {request.host}")
        element += f';host="{request.host}"'
    prior = request.headers.get("Forwarded")
    hop.append(f"Forwarded: {prior}, {element}" if prior else f"Forwarded: {element}")
    parts += ("\r\n".join(hop).encode("utf-8", "surrogateescape"), b"\r\n", extra, b"\r\n")
    return b"".join(parts)


def answer_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The answer's end-to-end headers, for the client."""
    dropped = ANSWER_NOT_PASSED
    for name, value in raw:
        if name.lower() == b"connection":
            dropped = dropped | {t.strip().lower() for t in value.split(b",")}
    return [
        (name.decode("latin-1"), text(value)) for name, value in raw if name.lower() not in dropped
    ]


def text(value: bytes) -> str:
    """Header bytes as aiohttp will write them again: UTF-8 where they are, else Latin-1."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")
