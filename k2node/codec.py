"""JSON in and out of k2node's processes, fast (orjson, in C).

For every JSON the node, a task process, the store and the local K2 read and write, except
where bytes must equal JavaScript's `JSON.stringify` (hashed and signed values: those go
through `contract.jsjson`). Output is compact UTF-8, non-ASCII kept (escaped only in a
value orjson refuses: one holding a lone surrogate, an integer past 64 bits or a key that
is not a string). Parsing refuses NaN, Infinity and nesting deeper than 1,024
levels with a ValueError (never a RecursionError), and reads an integer past 64 bits as a
float, as JavaScript's `JSON.parse` does.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# orjson refuses integers past 64 bits, keys that are not strings and lone surrogates
# (which JavaScript strings may hold); json writes them all, the surrogates escaped.
_fallback = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

JSON_HEADERS = {"Content-Type": "application/json"}  # beside a body from `dumps`
JSONDecodeError = orjson.JSONDecodeError  # a ValueError (and a json.JSONDecodeError)


def loads(raw: bytes | str) -> Any:
    """The value of a JSON text; ValueError when it is not one."""
    try:
        return orjson.loads(raw)
    except JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise
    try:  # an escaped lone surrogate, as `dumps` writes one
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def dumps(value: Any) -> bytes:
    """`value` as compact JSON bytes; TypeError for what JSON cannot hold."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _fallback.encode(value).encode()


def dumps_text(value: Any) -> str:
    return dumps(value).decode()
