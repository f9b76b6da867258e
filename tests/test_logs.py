"""The module loggers (k2node.logs.Logger): what is configured is what they do, each time
logging is configured, and they keep their methods once it is."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from k2node.logs import Logger, configure_logging, get_logger


@pytest.fixture
def restored() -> Iterator[None]:
    before = structlog.get_config()
    yield
    structlog.configure(**before)
    Logger.reconfigured()


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_new_level_applies_to_a_logger_already_used(restored: None) -> None:
    log = get_logger("k2node.test")
    quiet = io.StringIO()
    configure_logging("json", "error", quiet)
    log.info("hidden", round=1)
    log.error("shown", round=2)
    assert [(e["event"], e["round"], e["level"]) for e in _lines(quiet)] == [("shown", 2, "error")]
    assert "info" in vars(log)  # looked up once, then an attribute of its own
    loud = io.StringIO()
    configure_logging("json", "info", loud)
    log.info("now_shown", round=3)
    assert [e["event"] for e in _lines(loud)] == ["now_shown"]
    assert quiet.getvalue().count("\n") == 1  # the old stream no longer written


def test_capture_logs_sees_a_configured_logger(restored: None) -> None:
    log = get_logger("k2node.test")
    configure_logging("json", "info", io.StringIO())
    log.info("before")
    with structlog.testing.capture_logs() as captured:
        log.info("during", task_id="t")
    assert [(e["event"], e["task_id"]) for e in captured] == [("during", "t")]


def test_an_unknown_method_is_an_attribute_error(restored: None) -> None:
    configure_logging("json", "info", io.StringIO())
    with pytest.raises(AttributeError):
        get_logger("k2node.test").no_such_method  # noqa: B018
