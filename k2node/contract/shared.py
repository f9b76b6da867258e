"""Shared reads: parts of a task state that many readers get as one read-only object.

The local K2 hands every reader of a round's submissions (or of a stake list) the same
frozen copy until a transaction changes it, instead of a copy each: a simulation's
thousand nodes reading the same round then cost one copy, not a thousand. A reader that
tries to change one gets a TypeError saying so (`dict(...)` makes a copy of its own).

A pure function of such reads (the distribution rules) is answered from memory when it is
called again with the very same objects: identical objects cannot differ in content.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

_READ_ONLY = "a K2 read is shared by its readers and read-only: copy it (dict(...)) to change it"


def _refuse(*_: Any, **__: Any) -> NoReturn:
    raise TypeError(_READ_ONLY)


class FrozenDict(dict[Any, Any]):
    """A dict no one changes: JSON encoders and readers see a dict."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    setdefault = pop = popitem = clear = update = _refuse

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return {k: thaw(v) for k, v in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (thaw(self),))


class FrozenList(list[Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [thaw(v) for v in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (thaw(self),))


EMPTY = FrozenDict()


def freeze(value: Any) -> Any:
    """A frozen deep copy of a JSON value (frozen parts are shared as they are)."""
    kind = type(value)
    if kind is dict:
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if kind is list:
        return FrozenList([freeze(v) for v in value])
    return value


def thaw(value: Any) -> Any:
    """A plain deep copy (dicts and lists of one's own)."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value


_SCALARS = (str, int, float, bool, type(None))


def _identity(value: Any, kept: list[Any]) -> Any:
    """What identifies `value` for a memory of shared reads, or None: a frozen object by
    identity (kept alive so its id is not reused), a plain dict of frozen ones by theirs
    (a few rounds' parts, gathered by the caller), a scalar by itself. Anything else is not
    a shared read: looked at no further (a plain list of 100,000 entries costs one check)."""
    if isinstance(value, FrozenDict | FrozenList):
        kept.append(value)
        return ("id", id(value))
    if isinstance(value, _SCALARS):
        return ("value", type(value), value)
    if type(value) is dict:
        parts = []
        for k, v in value.items():
            if not isinstance(v, FrozenDict | FrozenList):
                return None
            kept.append(v)
            parts.append((k, id(v)))
        return ("dict", tuple(parts))
    return None


P = ParamSpec("P")
R = TypeVar("R")


def remembered(size: int = 16) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Remember a pure function's last `size` answers for arguments made of shared reads
    (other arguments: computed each time, as without it). Its answers are shared too: a
    function answering a dict answers a FrozenDict."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        answers: OrderedDict[Any, tuple[list[Any], R]] = OrderedDict()

        @functools.wraps(function)
        def remembering(*args: P.args, **kwargs: P.kwargs) -> R:
            kept: list[Any] = []
            parts = [_identity(arg, kept) for arg in args]
            if kwargs or None in parts:
                return function(*args, **kwargs)
            key = tuple(parts)
            found = answers.get(key)
            if found is not None:
                answers.move_to_end(key)
                return found[1]
            answer = function(*args, **kwargs)
            answers[key] = (kept, answer)
            if len(answers) > size:
                answers.popitem(last=False)
            return answer

        return remembering

    return wrap
