"""What each route of the node's HTTP surface takes and answers: the descriptions behind
`GET /openapi.json` (openapi.py joins them to the router, which refuses a route without
one). The namespace RPC's and the embedded K2's calls are described from their handlers'
signatures, so a method added to either is described as it is registered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from k2node.contract.methods import NAMESPACE_PATH
from k2node.contract.phases import PAYOUT, PHASE_NAMES
from k2node.node.http.namespace_rpc import METHODS
from k2node.node.http.openapi import (
    OPENAPI_PATH,
    Operation,
    Schema,
    Status,
    call_array,
    positional_params,
)
from k2node.node.provision import K2_RPC_PATH

K2Methods = Mapping[str, Callable[..., Awaitable[Any]]]

PUBKEY: Schema = {"type": "string", "minLength": 32, "maxLength": 44}
ROUND: Schema = {"type": "integer", "minimum": 0}
OBJECT: Schema = {"type": "object"}
TEXT: Schema = {"type": "string"}
FS_METHODS = ["readFile", "writeFile", "appendFile", "mkdir", "readdir", "exists", "unlink", "rm"]

PATH_PARAMETERS: Mapping[str, Schema] = {
    "task_id": {"description": "a task's id (its account's base58 public key)", "schema": PUBKEY},
    "cid": {"description": "a content id, CIDv0 or CIDv1", "schema": TEXT},
    "path": {"description": "the rest of the path; it may hold '/'", "schema": TEXT},
}

# the namespace RPC's parameters by their handlers' names (rpc_methods.py, rpc_files.py, ...)
NAMESPACE_HINTS: Mapping[str, Schema] = {
    "round_": ROUND,
    "wanted": OBJECT,
    "task_options": OBJECT,
    "value": {"type": "string", "maxLength": 512},
    "candidate": PUBKEY,
    "submitter": PUBKEY,
    "pubkey": PUBKEY,
    "source": PUBKEY,
    "beneficiary": PUBKEY,
    "task_id": PUBKEY,
    "is_valid": {"type": "boolean"},
    "distribution": {"type": "object", "additionalProperties": ROUND},
    "task_type": {"enum": ["KOII"]},
    "signed": TEXT,
    "level": TEXT,
    "message": TEXT,
    "action": TEXT,
    "url": TEXT,
    "serialized": {"description": "base64, or a Node.js Buffer's JSON"},
    "amount": ROUND,
    "method": {"enum": FS_METHODS + [f"{name}Sync" for name in FS_METHODS]},
    "path": TEXT,
    "files": {"type": "object", "additionalProperties": {"contentEncoding": "base64"}},
    "data": {"type": "string", "contentEncoding": "base64"},
    "cid_version": {"enum": [0, 1]},
    "cid": TEXT,
    "max_bytes": {"type": "integer", "minimum": 1, "maximum": 4 * 1024 * 1024},
}
K2_HINTS: Mapping[str, Schema] = {
    "config": OBJECT,
    "pubkey": PUBKEY,
    "program": PUBKEY,
    "task_id": PUBKEY,
    "submitter": PUBKEY,
    "round_": ROUND,
    "encoded": TEXT,
    "size": ROUND,
    "limit": ROUND,
    "lamports": ROUND,
    "signatures": {"type": "array", "items": TEXT, "maxItems": 256},
}


def namespace_body() -> Schema:
    calls = positional_params(METHODS, NAMESPACE_HINTS, skip=1)
    return {
        "type": "object",
        "required": ["args", "taskId", "secret"],
        "properties": {
            "args": {"oneOf": [call_array(name, params) for name, params in calls.items()]},
            "taskId": PUBKEY,
            "secret": TEXT,
        },
    }


def k2_body(methods: K2Methods) -> Schema:
    calls = positional_params(methods, K2_HINTS)
    one = {
        "oneOf": [
            {
                "type": "object",
                "required": ["jsonrpc", "method"],
                "properties": {
                    "jsonrpc": {"const": "2.0"},
                    "id": {"type": ["integer", "string", "null"]},
                    "method": {"const": name},
                    "params": call_array(None, params),
                },
            }
            for name, params in calls.items()
        ]
    }
    return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": 100}]}


JSON = "application/json"
PHASE_BODY: Schema = {
    "type": "object",
    "required": ["functionCall", "roundNumber"],
    "properties": {
        "functionCall": {"enum": [*PHASE_NAMES, PAYOUT]},
        "roundNumber": ROUND,
        "isPreviousRoundFailed": {"type": "boolean"},
    },
}
REGISTRATION: Schema = {
    "type": "object",
    "required": ["signature", "publicKey"],
    "properties": {
        "signature": {"description": "payloadSigning({url, timestamp})", **TEXT},
        "publicKey": PUBKEY,
    },
}
ADD_FORM: Schema = {
    "type": "object",
    "required": ["file"],
    "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream"}},
}
ARG = {"arg": {"description": "a CID, /ipfs/<cid> or <cid>/<path>", **TEXT}}
KUBO = {"application/x-www-form-urlencoded": OBJECT}  # kubo's RPC sends its args in the query
BAD_ARG: dict[Status, str] = {400: "arg is not a CID", 404: "not held here nor found on peers"}

OPERATIONS: Mapping[tuple[str, str], Operation] = {
    ("GET", "/"): Operation(
        "the node's state as JSON, or the status page for a browser",
        {200: "JSON, or HTML where Accept puts text/html first"},
        headers={"Accept": TEXT},
    ),
    ("GET", "/id"): Operation("the main wallet's public key", {200: "a JSON string"}),
    ("GET", "/standing"): Operation(
        "where this node stands in its tasks (what `k2node status --json` prints)", {200: "JSON"}
    ),
    ("GET", "/metrics"): Operation("Prometheus metrics", {200: "Prometheus' text format"}),
    ("GET", "/tasks"): Operation("the tasks this node runs", {200: "[{TaskName, TaskID}]"}),
    ("GET", OPENAPI_PATH): Operation("this document", {200: "OpenAPI 3.1"}),
    ("GET", "/events"): Operation(
        "the node's events, one JSON message each (phases, chain actions, payouts)",
        {},
        websocket=True,
    ),
    ("POST", NAMESPACE_PATH): Operation(
        "the namespace RPC: the calls a task makes to its node (K2-CONTRACT)",
        {
            200: "{response: the method's answer}",
            401: "unknown task or wrong secret",
            422: "not a call, an unknown method, wrong arguments, or refused",
        },
        body={JSON: namespace_body()},
        body_required=True,
        access="loopback",
    ),
    ("GET", "/nodes/{task_id}"): Operation(
        "the nodes registered for a task, signed by themselves", {200: "[registration]"}
    ),
    ("POST", "/register-node/{task_id}"): Operation(
        "a node says where it serves a task",
        {
            200: "{registered: publicKey}",
            409: "not signed by its key, not staked, a replay or stale",
            422: "not {signature, publicKey}",
        },
        body={JSON: REGISTRATION},
        body_required=True,
    ),
    ("POST", "/admin/tasks/{task_id}/phase"): Operation(
        "with timers off, run one phase (or the payout) of a round by hand",
        {200: "what the phase did", 422: "not {functionCall, roundNumber}"},
        body={JSON: PHASE_BODY},
        body_required=True,
        access="admin",
    ),
    ("*", "/task/{task_id}/{path}"): Operation(
        "the task's own routes, streamed both ways; WebSocket upgrades are relayed",
        {
            "default": "the task's own answer",
            101: "a WebSocket relayed to the task",
            400: "the body cannot be read, or a WebSocket upgrade is not valid",
            408: "the request body stalled",
            413: "the request body is over the task's limit",
            422: "the task is not running",
            503: "the task already has as many WebSockets as it may",
        },
        body={"*/*": {}},
        websocket=True,
        passthrough=True,
    ),
    ("GET", "/ipfs/{cid}"): Operation(
        "a file this node holds; ?format=raw one block, ?format=car the DAG",
        {200: "the bytes", 400: "not a CID, a directory, or an unknown format"},
        query={"format": {"enum": ["raw", "car"]}},
        headers={"Accept": TEXT},
    ),
    ("GET", "/ipfs/{cid}/{path}"): Operation(
        "a file inside a directory this node holds",
        {200: "the bytes", 400: "not a CID, a directory, or an unknown format"},
        query={"format": {"enum": ["raw", "car"]}},
        headers={"Accept": TEXT},
    ),
    ("POST", "/api/v0/add"): Operation(
        "kubo's add: each `file` part stored, one JSON line per file",
        {200: "JSON lines {Name, Hash, Size}", 400: "not multipart, no file part, bad options"},
        body={"multipart/form-data": ADD_FORM},
        query={
            "cid-version": {"enum": [0, 1]},
            "raw-leaves": {"enum": ["true", "false"]},
            "wrap-with-directory": {"enum": ["true", "false"]},
        },
        access="admin",
    ),
    ("POST", "/api/v0/cat"): Operation(
        "kubo's cat",
        {200: "the bytes", **BAD_ARG},
        body=KUBO,
        query=ARG,
        required_query=("arg",),
        access="admin",
    ),
    ("POST", "/api/v0/block/get"): Operation(
        "kubo's block/get",
        {200: "the block", **BAD_ARG},
        body=KUBO,
        query=ARG,
        required_query=("arg",),
        access="admin",
    ),
    ("POST", "/api/v0/pin/add"): Operation(
        "kubo's pin/add",
        {200: "{Pins}", **BAD_ARG},
        body=KUBO,
        query=ARG,
        required_query=("arg",),
        access="admin",
    ),
    ("POST", "/api/v0/id"): Operation("kubo's id", {200: "{ID, AgentVersion}"}, access="admin"),
    ("POST", "/api/v0/version"): Operation("kubo's version", {200: "{Version}"}, access="admin"),
}


def operations(k2: K2Methods | None) -> dict[tuple[str, str], Operation]:
    """Every route's description; the embedded K2's when the node has one."""
    found = dict(OPERATIONS)
    if k2 is not None:
        found[("POST", K2_RPC_PATH)] = Operation(
            "the embedded K2: Solana's JSON-RPC 2.0, a call or a batch of 1-100",
            {
                200: "a JSON-RPC answer (its errors too)",
                503: "the transaction was applied but is not yet on disk: ask again",
            },
            body={JSON: k2_body(k2)},
            body_required=True,
        )
    return found
