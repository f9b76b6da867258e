from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from k2node.config import ConfigError, load_settings, load_task_config
from k2node.contract.units import ROE_PER_KOII
from k2node.eventloop import EVENT_LOOP_ENV, EventLoopError, run_main
from tests.conftest import REPO


def test_defaults_and_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env-local"
    env.write_text("TASKS=abc,def\nTASK_STAKES=1.5,2\nGLOBAL_TIMERS=false\nSERVER_PORT=4000\n")
    settings = load_settings(env, {"SERVER_PORT": "5000"}, {})
    assert settings.tasks == ("abc", "def")
    assert settings.task_stakes == (int(1.5 * ROE_PER_KOII), 2 * ROE_PER_KOII)
    assert settings.global_timers is False
    assert settings.server_port == 5000  # the environment beats the file
    assert load_settings(None, {}, {}).server_port == 30017
    assert load_settings(None, {"TIMERS": "false"}).global_timers is False


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SERVER_PORT": "abc"}, "SERVER_PORT"),
        ({"SERVER_PORT": "70000"}, "SERVER_PORT"),
        ({"GLOBAL_TIMERS": "maybe"}, "GLOBAL_TIMERS"),
        ({"TASKS": "a,b", "TASK_STAKES": "1"}, "TASK_STAKES"),
        ({"TASKS": "a", "TASK_STAKES": "lots"}, "TASK_STAKES"),
        ({"K2_NODE_URL": "ftp://127.0.0.1:8899"}, "K2_NODE_URL"),
        ({"K2NODE_SLOT_MS": "0"}, "K2NODE_SLOT_MS"),
        ({"INITIAL_STAKING_WALLET_BALANCE": "-1"}, "INITIAL_STAKING_WALLET_BALANCE"),
        ({"K2NODE_LOG_FORMAT": "xml"}, "K2NODE_LOG_FORMAT"),
        ({"K2NODE_TASK_SANDBOX": "maybe"}, "K2NODE_TASK_SANDBOX"),
        ({"K2NODE_TASK_MEMORY_MB": "-5"}, "K2NODE_TASK_MEMORY_MB"),
        ({"K2NODE_TASK_MAX_BODY_MB": "0"}, "K2NODE_TASK_MAX_BODY_MB"),
        ({"K2NODE_TASK_WS_CONNECTIONS": "lots"}, "K2NODE_TASK_WS_CONNECTIONS"),
    ],
)
def test_bad_settings_name_themselves(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(None, env)


def test_bundled_task_config_loads() -> None:
    args = load_task_config(REPO / "k2node" / "examples" / "config-task.yml")
    assert args["round_time"] >= args["submission_window"] + args["audit_window"]
    assert args["bounty_amount_per_round"] == 1 * ROE_PER_KOII


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("task_name: x\nround_time: 10\nsubmission_window: 8\naudit_window: 8\n", "round_time"),
        ("task_name: x\nround_time: ten\n", "round_time"),
        ("- a list\n", "mapping"),
        ("task_name: [\n", "YAML"),
        ("round_time: 20\n", "task_name"),
    ],
)
def test_bad_task_config_names_the_field(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "task.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_task_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_task_config(tmp_path / "missing.yml")


async def _loop_kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_the_event_loop_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop", reason="uvloop is a dependency on Linux and macOS only")
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert run_main(_loop_kind()) == "uvloop"  # the default where it is installed
    assert run_main(_loop_kind(), "asyncio") == "asyncio"
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert run_main(_loop_kind()) == "asyncio"
    monkeypatch.setenv(EVENT_LOOP_ENV, "trio")
    with pytest.raises(EventLoopError, match="K2NODE_EVENT_LOOP must be auto, uvloop or asyncio"):
        run_main(_loop_kind())
