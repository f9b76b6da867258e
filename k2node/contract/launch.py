"""How a node starts a task process: the ten positional arguments and the environment names
(K2-CONTRACT: "IPC between node and task process")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The fork channel's descriptor and framing, as Node.js's child_process.fork sets them.
CHANNEL_FD_ENV = "NODE_CHANNEL_FD"
CHANNEL_MODE_ENV = "NODE_CHANNEL_SERIALIZATION_MODE"
# k2node's own: the code of a Python task (`module:Class` or `path/file.py:Class`).
TASK_ENTRY_ENV = "K2NODE_TASK_ENTRY"
# k2node's own: the Unix socket a Python task serves its HTTP routes on instead of its port,
# in a folder only the node's user can enter (JavaScript tasks keep the contract's port).
TASK_SOCKET_ENV = "K2NODE_TASK_SOCKET"
TASK_MODE = "service"
# In a Python task's argv where the secret would be: it comes over the channel instead.
SECRET_ON_CHANNEL = "-"
# The task API a task process offers its code; an artifact's manifest names the one it needs.
TASK_API_VERSION = 1


# requirementsTags of these types in config-task.yml name the variables a task reads.
VARIABLE_TYPES = ("TASK_VARIABLE", "GLOBAL_VARIABLE")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by the node itself: a task cannot have them from the operator's environment.
RESERVED_VARIABLES = frozenset(
    {"PATH", "PYTHONPATH", CHANNEL_FD_ENV, CHANNEL_MODE_ENV, TASK_ENTRY_ENV, TASK_SOCKET_ENV}
)


def declared_variables(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The task variables a config-task.yml's requirementsTags declare, sorted; names that
    are not environment variable names, or that the node sets itself, are left out."""
    tags = config.get("requirementsTags") or []
    if not isinstance(tags, list):
        return ()
    names = {
        str(tag["value"])
        for tag in tags
        if isinstance(tag, dict) and tag.get("type") in VARIABLE_TYPES and tag.get("value")
    }
    return tuple(
        sorted(n for n in names if _VARIABLE_NAME.match(n) and n not in RESERVED_VARIABLES)
    )


class LaunchError(ValueError):
    """The arguments a task process was started with do not fit the contract."""


@dataclass(frozen=True)
class TaskArgs:
    name: str
    task_id: str
    port: int  # the task's own HTTP server
    mode: str
    main_pubkey: str
    secret: str  # 20 characters, per task: the namespace RPC's credential
    k2_url: str
    service_url: str
    stake: str
    node_port: int

    def argv(self) -> tuple[str, ...]:
        return (
            self.name,
            self.task_id,
            str(self.port),
            self.mode,
            self.main_pubkey,
            self.secret,
            self.k2_url,
            self.service_url,
            self.stake,
            str(self.node_port),
        )

    @classmethod
    def parse(cls, argv: list[str]) -> TaskArgs:
        if len(argv) < 10:
            raise LaunchError(
                "usage: python -m k2node.task NAME TASK_ID PORT service MAIN_KEY SECRET "
                "K2_URL SERVICE_URL STAKE NODE_PORT"
            )
        try:
            port, node_port = int(argv[2]), int(argv[9])
        except ValueError:
            raise LaunchError("PORT and NODE_PORT must be integers") from None
        return cls(
            argv[0], argv[1], port, argv[3], argv[4], argv[5], argv[6], argv[7], argv[8], node_port
        )
