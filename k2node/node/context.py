"""What the node's HTTP surface knows of one task it runs."""

from __future__ import annotations

from dataclasses import dataclass

from k2node.ipfs import IpfsBackend
from k2node.node.agent import TaskAgent


@dataclass(frozen=True)
class TaskContext:
    agent: TaskAgent
    name: str
    secret: str  # the task process's credential on the namespace RPC
    stake: int
    public_url: str  # where peers and the task reach this node
    ipfs: IpfsBackend | None = None
    rpc_url: str = ""  # K2's JSON-RPC for the task: the K2's URL, or the node's own /k2
    transfers_allowed: bool = False  # may the task move the operator's money (sendTransaction)
    # A JavaScript task's wrapper signs with the staking key itself, so it is handed the
    # keypair; a Python task signs through the node and sees the public key alone.
    javascript: bool = False

    @property
    def task_id(self) -> str:
        return self.agent.task_id
