"""Byte-exact `JSON.stringify` for the values K2 tasks hash and sign.

Every node of a task must hash the same bytes, and JavaScript nodes compute them with
`JSON.stringify`: compact separators, keys in insertion order, non-ASCII kept as is, lone
surrogates escaped, and JavaScript's own number formatting.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_lone_surrogates(text: str) -> str:
    # A Python str holds a surrogate only when it is unpaired; JavaScript escapes those.
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# What JSON.stringify escapes in a string besides lone surrogates: quotes, backslashes
# and control characters. An ASCII string with none of them is printed as it is, quoted.
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _js_string(value: str) -> str:
    if value.isascii() and _ESCAPED.search(value) is None:
        return f'"{value}"'  # (most strings hashed: keys, CIDs; a third of the time saved)
    return _escape_lone_surrogates(json.dumps(value, ensure_ascii=False))


def js_number(value: float) -> str:
    """Format a number as JavaScript's Number.prototype.toString does."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac = mantissa.partition(".")
    if int_part != "0":
        point = len(int_part) + exponent
    else:
        point = exponent - (len(frac) - len(frac.lstrip("0")))
    digits = (int_part + frac).lstrip("0").rstrip("0") or "0"
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        e = point - 1
        tail = f".{digits[1:]}" if count > 1 else ""
        text = f"{digits[0]}{tail}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


_SAFE_INT = 2**53
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_PLAIN = (str, bool, type(None))


_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # CPython's accelerator
_c_encoder = (
    _make_encoder(
        None, _COMPACT.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    if _make_encoder is not None
    else None
)


def _encode_flat(value: dict[Any, Any]) -> str:
    """The json module's C encoder without its Python wrapper (hashing 100,000 entries)."""
    if _c_encoder is None:
        return _COMPACT.encode(value)
    return "".join(_c_encoder(value, 0))


def _is_flat_plain(value: dict[Any, Any]) -> bool:
    """A flat object whose members the json module prints exactly as JavaScript does."""
    for key, member in value.items():
        kind = type(member)
        if type(key) is not str:
            return False
        if kind is int:
            if not -_SAFE_INT < member < _SAFE_INT:
                return False
        elif kind not in _PLAIN:
            return False
    return True


def stringify(value: Any) -> str:
    """Serialise like JavaScript's `JSON.stringify(value)` with no spacing."""
    if isinstance(value, dict) and _is_flat_plain(value):
        # the common shape (submission entries): the C encoder, then JavaScript's escaping
        return _escape_lone_surrogates(_encode_flat(value))
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, int | float):
        return js_number(value)
    if isinstance(value, dict):
        parts = [f"{_js_string(str(k))}:{stringify(v)}" for k, v in value.items()]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(stringify(v) for v in value) + "]"
    raise TypeError(f"cannot stringify {type(value).__name__}")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
