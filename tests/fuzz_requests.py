"""Hostile requests for the fuzz suite: schemathesis' cases from the node's own description
(well-formed and not), aimed at what the node holds (its task, its secret, its content)
and then, for some, broken on the way out: hostile JSON values, deep or huge bodies, odd
charsets, content encodings that lie, broken multipart, path and header tricks."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from typing import Any

import requests
from hypothesis import strategies as st
from schemathesis.generation.case import Case

from tests.fuzz_support import LiveNode

MAX_BODY = 8 * 1024 * 1024  # the node's JSON routes' limit (MAX_RPC_BODY)
TASK_PATHS = ["", "taskState", "value", "proof/0", "proof/x", "proof/99999999999999999999",
              "feed", "feed/stats", "nothing/here"]  # fmt: skip
# JSON values a handler may not expect where it expects another (as JSON text: big
# integers and lone surrogates are valid JSON that a strict encoder would not write)
HOSTILE_VALUES = [
    "null", "true", "false", "0", "-1", "1.5", "-0.0", "1e308", "-1e308", "1e-400",
    str(2**63), str(2**64), str(2**64 + 1), str(10**400), str(-(10**400)),
    '""', '"\\u0000"', '"\\ud800"', '"\\udfff\\ud800"', '"x"', '"' + "x" * 100_000 + '"',
    '"../../etc/passwd"', '"/etc/shadow"', '"."', '".."', '"a/../../b"', '"%2e%2e"',
    "[]", "{}", '[[[[[]]]]]', '{"": {"": {}}}', '{"type": "Buffer", "data": [256, -1]}',
    '{"type": "Buffer", "data": "x"}', '[' + ",".join(["0"] * 2000) + "]",
]  # fmt: skip
CHARSETS = ["utf-8", "utf-16", "utf-32", "latin-1", "ascii", "klingon", "", "rot13", "base64",
            "idna", "utf-8-sig", "cp1252", "punycode", "uu_codec"]  # fmt: skip
ENCODINGS = ["gzip", "deflate", "br", "zstd", "x-gzip", "compress", "identity", "gzip, gzip",
             "deflate, gzip", "chunked", "garbage"]  # fmt: skip
# a gzip whose content is far past the body limit: the limit must hold after decoding
GZIP_BOMB = gzip.compress(b" " * (MAX_BODY + 1024), compresslevel=9)
HUGE = b"[" + b"0," * ((MAX_BODY + 4096) // 2) + b"0]"
CONTENT_TYPES = ["", "text/plain", "multipart/form-data", "*/*", "json",
                 "application/x-www-form-urlencoded"]  # fmt: skip
PATH_TRICKS = ["/..", "/%2e%2e", "//", "/%00", "/%ZZ", "/" + "a" * 9000, "/é", "/;x", "/%2F",
               "/./.", "/~", "/%ff%fe"]  # fmt: skip
FRAMING = ("path", "header")  # hostilities after which the request may not reach its route


@dataclass
class Hostile:
    """A request as it goes on the wire, with what was done to it."""

    prepared: requests.PreparedRequest
    operation: str  # "METHOD /template"
    hostility: str

    @property
    def framed(self) -> bool:
        """Whether it still names its route as described (its answer must be one listed)."""
        return self.hostility.split(":")[0] not in FRAMING

    def describe(self) -> str:
        body = self.prepared.body
        shown = body[:300] if isinstance(body, bytes) else str(body)[:300]
        headers = {k: v[:120] for k, v in self.prepared.headers.items()}
        return (
            f"{self.operation} [{self.hostility}] {self.prepared.method} "
            f"{str(self.prepared.url)[:300]} headers={headers} body={shown!r}"
        )


def aim(case: Case, live: LiveNode, data: st.DataObject) -> None:
    """Point a generated case at what the node has, often enough to get past lookups."""
    params = case.path_parameters
    if "task_id" in params and data.draw(st.integers(0, 9)) < 7:
        params["task_id"] = live.task_id
    if case.path == "/task/{task_id}/{path}" and data.draw(st.booleans()):
        params["path"] = data.draw(st.sampled_from(TASK_PATHS))
    if "cid" in params and data.draw(st.booleans()):
        params["cid"] = data.draw(st.sampled_from(list(live.held.values()))).split("/")[0]
        if "path" in params:
            params["path"] = data.draw(st.sampled_from(["a.txt", "b.txt", "../a.txt", "x"]))
    if case.query is not None and "arg" in case.query and data.draw(st.booleans()):
        held = data.draw(st.sampled_from(list(live.held.values())))
        case.query["arg"] = held + data.draw(st.sampled_from(["", "/../a.txt", "/x", "/"]))
    body = case.body
    rpc = case.path == "/namespace-wrapper" and isinstance(body, dict)
    if rpc and data.draw(st.integers(0, 9)) < 8:
        body["taskId"], body["secret"] = live.task_id, live.secret
    if case.path == "/k2":  # the K2's calls name accounts: often the ones that exist
        for call in body if isinstance(body, list) else [body]:
            params = call.get("params") if isinstance(call, dict) else None
            for i, value in enumerate(params if isinstance(params, list) else []):
                if isinstance(value, str) and data.draw(st.booleans()):
                    params[i] = data.draw(st.sampled_from([live.task_id, live.staking_key]))


def _json(case: Case) -> Any:
    """The case's body where it is JSON (else an empty object)."""
    body = case.body
    return body if isinstance(body, dict | list | str | int | float | bool) else {}


def _replace_leaf(value: Any, data: st.DataObject, hostile: str) -> str:
    """`value` as JSON text with one of its leaves (or itself) replaced by `hostile`."""
    if isinstance(value, dict) and value and data.draw(st.integers(0, 3)) > 0:
        key = data.draw(st.sampled_from(sorted(value)))
        items = [(k, _replace_leaf(v, data, hostile) if k == key else json.dumps(v))
                 for k, v in value.items()]  # fmt: skip
        return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in items) + "}"
    if isinstance(value, list) and value and data.draw(st.integers(0, 3)) > 0:
        index = data.draw(st.integers(0, len(value) - 1))
        parts = [_replace_leaf(v, data, hostile) if i == index else json.dumps(v)
                 for i, v in enumerate(value)]  # fmt: skip
        return "[" + ", ".join(parts) + "]"
    return hostile


def _multipart(data: st.DataObject) -> tuple[bytes, str]:
    boundary = data.draw(st.sampled_from(["xyz", "a" * 80, "", "--", "b c", "é", "x" * 300]))
    pieces = data.draw(
        st.lists(
            st.sampled_from(
                [
                    f"--{boundary}\r\n".encode(),
                    b'Content-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc\r\n',
                    b"Content-Disposition: form-data; name=file\r\n\r\n",
                    b"Content-Disposition: form-data; name=\"file\"; filename*=utf-8''%ff\r\n",
                    b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n",
                    b"Content-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
                    b"Content-Encoding: gzip\r\n\r\nnot gzip\r\n",
                    b"X-" + b"h" * 9000 + b": 1\r\n",
                    f"--{boundary}--\r\n".encode(),
                    b"\r\n",
                    b"\x00\xff\xfe",
                ]
            ),
            max_size=8,
        )
    )
    kind = data.draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                "multipart/form-data",
                "multipart/mixed; boundary=xyz",
                f'multipart/form-data; boundary="{boundary}"; charset=klingon',
            ]
        )
    )
    return b"".join(pieces), kind


def break_on_the_way(prepared: requests.PreparedRequest, case: Case, data: st.DataObject) -> str:
    """Break `prepared` in one of the ways a hostile client would; say how."""
    how = data.draw(
        st.sampled_from(
            ["none"] * 4
            + ["value", "value", "deep", "wide", "huge", "charset", "encoding", "multipart"]
            + ["bytes", "type", "path", "header"]
        )
    )
    headers = prepared.headers
    body: bytes | None = None
    if how == "value":
        hostile = data.draw(st.sampled_from(HOSTILE_VALUES))
        body = _replace_leaf(_json(case), data, hostile).encode("utf-8", "surrogatepass")
        headers["Content-Type"] = "application/json"
    elif how == "deep":
        n = data.draw(st.sampled_from([500, 1000, 5000, 100_000]))
        opening, closing = data.draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        body = opening * n + b"1" + closing * n
        headers["Content-Type"] = "application/json"
    elif how == "wide":
        n = data.draw(st.sampled_from([10_000, 300_000]))
        body = b'{"args": [' + b",".join([b'"getRound"'] + [b"0"] * n) + b"]}"
        headers["Content-Type"] = "application/json"
    elif how == "huge":
        body = HUGE
        headers["Content-Type"] = "application/json"
    elif how == "charset":
        charset = data.draw(st.sampled_from(CHARSETS))
        headers["Content-Type"] = f"application/json; charset={charset}"
        if isinstance(prepared.body, bytes) and data.draw(st.booleans()):
            body = prepared.body
        else:
            body = json.dumps(_json(case)).encode("utf-16")
    elif how == "encoding":
        encoding = data.draw(st.sampled_from(ENCODINGS))
        plain = prepared.body if isinstance(prepared.body, bytes) else b"{}"
        body = data.draw(
            st.sampled_from([plain, gzip.compress(plain), zlib.compress(plain), GZIP_BOMB, b""])
        )
        headers["Content-Encoding"] = encoding
    elif how == "multipart":
        body, headers["Content-Type"] = _multipart(data)
    elif how == "bytes":
        body = data.draw(st.binary(max_size=2000))
        headers["Content-Type"] = data.draw(
            st.sampled_from(["application/json", "text/plain", "application/octet-stream", "x"])
        )
    elif how == "type":  # the body as it is, said to be something else, or nothing
        kind = data.draw(st.sampled_from([*CONTENT_TYPES, None]))
        headers.pop("Content-Type", None)
        if kind is not None:
            headers["Content-Type"] = kind
        how = f"type:{kind}"
    elif how == "path":
        trick = data.draw(st.sampled_from(PATH_TRICKS))
        url = str(prepared.url)
        query = url.find("?")
        cut = query if query >= 0 else len(url)
        where = data.draw(st.integers(url.index("/", len("http://")), cut))
        prepared.url = url[:where] + trick + url[where:]
        how = f"path:{trick[:12]}"
    elif how == "header":
        name, value = data.draw(
            st.sampled_from(
                [
                    ("Transfer-Encoding", "chunked"),
                    ("Expect", "100-continue"),
                    ("X-Big", "x" * 9000),
                    ("X-Forwarded-For", "203.0.113.9"),
                    ("Authorization", "Bearer not-the-token"),
                    ("Accept", "text/html,application/json"),
                    ("Accept", "application/vnd.ipld.car"),
                    ("Accept", "application/vnd.ipld.raw"),
                    ("Upgrade", "websocket"),
                    ("Content-Length", "not a number"),
                    ("Host", ""),
                ]
            )
        )
        headers[name] = value
        if name == "Transfer-Encoding":  # a chunked body with no chunk (the client sends
            prepared.body = b""  # the terminator: a body never sent is a slow client's)
            headers.pop("Content-Length", None)
        how = f"header:{name}"
    if body is not None:
        prepared.body = body
        headers["Content-Length"] = str(len(body))
        headers.pop("Transfer-Encoding", None)
    headers["Connection"] = "close"  # one request, one connection: none poisons the next
    return how
