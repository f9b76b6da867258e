"""Message shapes shared by the node and task processes: IPC phase names, RPC methods."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    EXECUTE_TASK = "executeTask"
    SUBMIT_PAYLOAD = "submitPayload"
    AUDIT_PAYLOAD = "auditPayload"
    GENERATE_DISTRIBUTION = "generateAndSubmitDistributionList"
    DISTRIBUTION_AUDIT = "distributionListAudit"


PHASE_NAMES = frozenset(p.value for p in Phase)

# Environment variables a task process receives besides its declared task variables.
CHANNEL_FD_ENV = "NODE_CHANNEL_FD"
CHANNEL_MODE_ENV = "NODE_CHANNEL_SERIALIZATION_MODE"
TASK_ENTRY_ENV = "K2NODE_TASK_ENTRY"
NAMESPACE_PATH = "/namespace-wrapper"

# Largest JSON body accepted on the namespace RPC and by a task's own routes.
MAX_RPC_BODY = 8 * 1024 * 1024
