"""Naming a task for a harness or a simulation: its CoreLogic, and its config-task.yml."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from k2node.config import DEFAULT_TASK_CONFIG
from k2node.contract.launch import TASK_MODE, TaskArgs
from k2node.task.core import CoreLogic
from k2node.task.runner import load_entry

# A CoreLogic subclass, or where it lives: `path/to/task.py:Class` or `module:Class`.
TaskSource = type[CoreLogic] | str
CONFIG_NAME = "config-task.yml"


def core_of(task: TaskSource) -> CoreLogic:
    """A new instance of the task's CoreLogic (each node has its own)."""
    if isinstance(task, str):
        return load_entry(task)
    if isinstance(task, type) and issubclass(task, CoreLogic):
        return task()
    raise TypeError(f"a task is a CoreLogic subclass or 'file.py:Class', not {task!r}")


def _source_file(task: TaskSource) -> Path | None:
    if isinstance(task, str):
        target = task.rpartition(":")[0]
        if target.endswith(".py"):
            return Path(target)
        module = sys.modules.get(target)
        found = getattr(module, "__file__", None)
        return Path(found) if found else None
    try:
        return Path(inspect.getfile(task))
    except (TypeError, OSError):
        return None


def config_of(task: TaskSource) -> Path:
    """The config-task.yml beside the task's source (or one folder up, a project's root),
    else the bundled example's."""
    source = _source_file(task)
    if source is not None:
        for folder in (source.parent, source.parent.parent):
            if (folder / CONFIG_NAME).is_file():
                return folder / CONFIG_NAME
    return DEFAULT_TASK_CONFIG


def launch_args(
    task_id: str, state: dict[str, Any], main: str, secret: str, stake: int, url: str
) -> TaskArgs:
    """The contract's ten launch arguments for an in-process task (it has no port)."""
    return TaskArgs(
        name=state["task_name"],
        task_id=task_id,
        port=0,
        mode=TASK_MODE,
        main_pubkey=main,
        secret=secret,
        k2_url="",
        service_url=url,
        stake=str(stake),
        node_port=0,
    )
