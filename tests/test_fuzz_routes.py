"""The fuzz suite over every route the node describes (`GET /openapi.json`): generated
requests, well-formed and malformed, against a real node running a task, from loopback.
No answer may be a 5xx or come later than its timeout; an answer to a request that still
names its route must be one the description lists for it; the node's own refusals carry a
short JSON message, and the node logs no error meanwhile. Seeded (the same requests each
run) and bounded; `make soak` runs more examples of each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (it comes with pip install '.[dev]')"
)
import requests

from k2node.contract.methods import NAMESPACE_PATH, Method
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.openapi import ANY_METHOD, UndescribedRoute, document
from k2node.node.http.route_docs import PATH_PARAMETERS, operations
from k2node.node.metrics import NodeMetrics
from k2node.settlement.local import LocalK2
from k2node.settlement.service import K2Service
from tests.fuzz_runs import (
    TIMEOUT,
    Findings,
    aiohttp_warnings,
    call_every_method,
    fuzz_operations,
    fuzz_websockets,
    logged_errors,
    namespace_calls,
)
from tests.fuzz_support import LiveNode, NodeThread

EXAMPLES = 10  # per operation and generation mode, per method, per WebSocket run
SOAK_EXAMPLES = 150
# answers that prove the run reached what is behind each route, not only its refusals
MUST_REACH = {
    "GET /task/{task_id}/{path}": 200,
    "GET /ipfs/{cid}": 200,
    "POST /namespace-wrapper": 200,
    "POST /k2": 200,
    "POST /api/v0/add": 200,
    "POST /admin/tasks/{task_id}/phase": 200,
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    thread = NodeThread(tmp_path_factory.mktemp("fuzzed"))
    node = thread.start()
    yield node
    thread.stop()


@pytest.fixture(scope="module")
def published(live: LiveNode) -> dict[str, Any]:
    answer = requests.get(f"{live.url}/openapi.json", timeout=TIMEOUT)
    assert answer.status_code == 200
    described: dict[str, Any] = answer.json()
    return described


def _run(live: LiveNode, doc: dict[str, Any], examples: int) -> Findings:
    found = Findings()
    with capture_logs() as logs, aiohttp_warnings() as warned:
        fuzz_operations(live, doc, examples, found)
        call_every_method(live, doc, examples, found)
        fuzz_websockets(live, doc, examples, found)
    found.problems += logged_errors(logs) + warned
    return found


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    """The description is the router's: a node with every part (the embedded K2 and IPFS
    store, metrics, standing) has each route in it, and nothing more."""

    async def standing() -> dict[str, Any]:
        return {}

    k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    try:
        service = K2Service(k2)
        api = NodeApi({}, "main", "", EventHub(), ipfs, service, None, NodeMetrics(), standing)
        app = api.app()
        registered = set()
        for route in app.router.routes():
            path = route.resource.canonical if route.resource else ""
            registered |= {
                (m, path) for m in (ANY_METHOD if route.method == "*" else [route.method.lower()])
            }
        doc = document(app.router, operations(service.methods), PATH_PARAMETERS, "k2node", "0")
        assert {(m, p) for p, item in doc["paths"].items() for m in item} == registered
        # and every description is of a route this node registers
        described = {(m.lower(), p) for m, p in operations(service.methods)}
        assert {(m, p) for m, p in registered if m != "head"} >= described - {
            ("*", "/task/{task_id}/{path}")
        }

        async def new(_: Any) -> None: ...

        app.router.add_get("/new", new)  # type: ignore[arg-type]
        with pytest.raises(UndescribedRoute, match=r"(GET|HEAD) /new"):
            document(app.router, operations(service.methods), PATH_PARAMETERS, "k2node", "0")
    finally:
        ipfs.close()
        k2.close()


def test_the_description_names_every_method_and_websocket(published: dict[str, Any]) -> None:
    names = {call["prefixItems"][0]["const"] for call in namespace_calls(published)}
    assert names == {m.value for m in Method}
    paths = published["paths"]
    assert paths[NAMESPACE_PATH]["post"]["x-loopback-only"] is True
    sockets = {path for path, item in paths.items() if item.get("get", {}).get("x-websocket")}
    assert sockets == {"/events", "/task/{task_id}/{path}"}
    assert json.dumps(paths["/api/v0/add"]["post"]["requestBody"]).count("multipart/form-data")


def test_no_route_answers_5xx_or_hangs(live: LiveNode, published: dict[str, Any]) -> None:
    found = _run(live, published, EXAMPLES)
    assert not found.problems, found.report()
    for operation, status in MUST_REACH.items():
        assert status in found.answers[operation], (operation, found.answers[operation])
    unreached = {m.value for m in Method} - set(found.answers)
    assert not unreached, f"namespace methods never reached past the secret: {unreached}"
    sockets = {url: found.answers[url] for url in found.answers if url.startswith("ws")}
    assert len(sockets) == 2 and all(s == {101} for s in sockets.values()), sockets


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_no_route_answers_5xx_or_hangs_long(live: LiveNode, published: dict[str, Any]) -> None:
    found = _run(live, published, SOAK_EXAMPLES)
    assert not found.problems, found.report()
