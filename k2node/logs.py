"""Structured logs: configured once at the edge, JSON when stdout is not a terminal."""

from __future__ import annotations

import json
import logging
import sys
import weakref
from collections.abc import MutableMapping
from typing import Any, ClassVar, TextIO

import orjson
import structlog

_SECRET_KEYS = frozenset({"secret", "secretkey", "secret_key", "_keypair", "password", "token"})


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


def _json_line(event: Any, **_: Any) -> str:
    # orjson: a line costs a few microseconds, not tens, on the loop the timers share
    try:
        return orjson.dumps(event, default=repr).decode()
    except TypeError:  # what orjson cannot hold (an integer past 64 bits, say)
        return json.dumps(event, default=repr)


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    Logger.reconfigured()


class Logger:
    """A module's logger, as `structlog.get_logger(name)` gives, minus the cost of its lazy
    proxy: the proxy builds, or looks up, a bound logger on every call (some 1.3 us, where
    a call filtered out by level costs 0.2), a score of times per node and round. Once
    logging is configured, each method is looked up once and kept; configuring again
    forgets them, so a new level or renderer applies to every logger."""

    _all: ClassVar[weakref.WeakSet[Logger]] = weakref.WeakSet()
    _configured = False

    def __init__(self, name: str) -> None:
        self._name = name
        Logger._all.add(self)

    def __getattr__(self, method: str) -> Any:
        found = getattr(structlog.get_logger(self._name), method)
        if Logger._configured and not method.startswith("__"):
            setattr(self, method, found)
        return found

    @classmethod
    def reconfigured(cls) -> None:
        cls._configured = True
        for logger in list(cls._all):
            for method in [k for k in vars(logger) if k != "_name"]:
                delattr(logger, method)


def get_logger(name: str) -> Any:
    """The logger of a module of k2node (see Logger)."""
    return Logger(name)
