"""Shapes of values on the wire: integers (never booleans, which JSON keeps apart), rounds,
and submission strings."""

from __future__ import annotations

from typing import TypeGuard

MAX_SUBMISSION_BYTES = 512


def is_int(value: object) -> TypeGuard[int]:
    """An integer, and not a boolean (Python's bool is an int; JSON's true is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_round(value: object) -> TypeGuard[int]:
    return is_int(value) and value >= 0


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def submission_problem(value: object) -> str | None:
    """Why `value` cannot be submitted, or None when it can."""
    if not isinstance(value, str):
        return "a submission must be a string"
    size = utf8_size(value)
    if size > MAX_SUBMISSION_BYTES:
        return f"submission is {size} bytes, the limit is {MAX_SUBMISSION_BYTES}"
    return None
