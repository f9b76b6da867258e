"""The node's HTTP surface (default port 30017): status, tasks, namespace RPC, the task proxy,
node registrations, events, admin calls and, with the embedded store, the IPFS gateway."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from k2node import __version__, codec
from k2node.contract.methods import MAX_RPC_BODY, NAMESPACE_PATH
from k2node.contract.phases import PAYOUT, PHASE_NAMES
from k2node.contract.values import is_round
from k2node.http_errors import HttpError, ProtocolLog, json_body, json_errors, json_response
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http.events import EventStream
from k2node.node.http.gateway import IpfsGateway
from k2node.node.http.namespace_rpc import NamespaceRpc, from_this_machine
from k2node.node.http.openapi import OPENAPI_PATH, document
from k2node.node.http.proxy import ProxiedTask, ProxyLimits, TaskProxy
from k2node.node.http.registry import NodeRegistry
from k2node.node.http.route_docs import PATH_PARAMETERS, operations
from k2node.node.metrics import CONTENT_TYPE, NodeMetrics
from k2node.node.provision import K2_RPC_PATH
from k2node.settlement.service import K2Service

STANDING_FRESH_S = 1.0
Standing = Callable[[], Awaitable[dict[str, Any]]]
# The page runs only its own script and talks only to this node.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'"
)


def _prefers_html(accept: str) -> bool:
    """Whether the client asks for HTML before JSON (a browser does; scripts do not)."""
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "text/html" not in kinds:
        return False
    return "application/json" not in kinds or kinds.index("text/html") < kinds.index(
        "application/json"
    )


@functools.cache
def _status_page() -> str:
    return (resources.files("k2node.node.http") / "status_page.html").read_text()


class ServedTask(ProxiedTask, Protocol):
    """A task as the HTTP surface sees it (the node's RunningTask)."""

    @property
    def context(self) -> TaskContext: ...

    async def manual_phase(self, name: str, round_: int, retry: bool) -> dict[str, Any]: ...


class NodeApi:
    def __init__(
        self,
        tasks: Mapping[str, ServedTask],
        main_pubkey: str,
        admin_token: str,
        events: EventHub,
        ipfs: EmbeddedIpfs | None = None,
        k2: K2Service | None = None,
        proxy_limits: ProxyLimits | None = None,
        metrics: NodeMetrics | None = None,
        standing: Standing | None = None,
    ) -> None:
        self._tasks = tasks
        self._main_pubkey = main_pubkey
        self._admin_token = admin_token
        self._events = EventStream(events)
        self._rpc = NamespaceRpc(self._context_of, events)
        self._ipfs = ipfs
        self._k2 = k2
        self._proxy = TaskProxy(proxy_limits or ProxyLimits())
        self._metrics = metrics
        self._standing = standing
        self._standing_cache: tuple[float, dict[str, Any]] | None = None
        self._standing_read: asyncio.Future[dict[str, Any]] | None = None
        self._description = b""

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_RPC_BODY,
            middlewares=[json_errors],
            handler_args={"logger": ProtocolLog()},
        )
        app.router.add_get("/", self._status)
        app.router.add_get("/id", self._id)
        if self._standing is not None:
            app.router.add_get("/standing", self._serve_standing)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/tasks", self._list_tasks)
        app.router.add_post(NAMESPACE_PATH, self._rpc.handle)
        app.router.add_get("/events", self._events.handle)
        app.router.add_routes(NodeRegistry(self._stake_list).routes())
        app.router.add_post("/admin/tasks/{task_id}/phase", self._phase)
        app.router.add_route("*", "/task/{task_id}/{path:.*}", self._proxy_request)
        if self._k2 is not None:  # the embedded K2, for tasks that read it themselves
            app.router.add_post(K2_RPC_PATH, self._k2.handle)
        if self._ipfs is not None:
            app.router.add_routes(
                IpfsGateway(self._ipfs, self.is_admin, self._main_pubkey).routes()
            )
        app.router.add_get(OPENAPI_PATH, self._serve_description)
        k2_methods = self._k2.methods if self._k2 is not None else None
        described = document(
            app.router, operations(k2_methods), PATH_PARAMETERS, "k2node", __version__
        )
        self._description = codec.dumps(described)
        app.on_shutdown.append(lambda _: self._events.close())
        app.on_shutdown.append(lambda _: self._proxy.close())
        return app

    async def _serve_description(self, _: web.Request) -> web.Response:
        return web.Response(body=self._description, content_type="application/json")

    async def _serve_metrics(self, _: web.Request) -> web.Response:
        assert self._metrics is not None
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def _context_of(self, task_id: str) -> TaskContext | None:
        task = self._tasks.get(task_id)
        return None if task is None else task.context

    def _task(self, task_id: str) -> ServedTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise HttpError(404, f"unknown task {task_id[:64]}")
        return task

    async def _stake_list(self, task_id: str) -> dict[str, int] | None:
        ctx = self._context_of(task_id)
        if ctx is None:
            return None
        state = await ctx.agent.state({"is_stake_list_required": True})
        stakes: dict[str, int] = state["stake_list"]
        return stakes

    async def _status(self, request: web.Request) -> web.Response:
        """A browser gets the status page; JSON clients the node's state, as always."""
        if _prefers_html(request.headers.get("Accept", "")) and self._standing is not None:
            return web.Response(
                text=_status_page(),
                content_type="text/html",
                headers={
                    "Cache-Control": "no-cache",
                    "Content-Security-Policy": _PAGE_POLICY,
                    "Vary": "Accept",
                },
            )
        return json_response(
            {"status": "running", "version": __version__, "tasks": len(self._tasks)},
            headers={"Vary": "Accept"},
        )

    async def _serve_standing(self, _: web.Request) -> web.Response:
        """Where this node stands in its tasks (`k2node status --json`), at most once a
        second however many pages ask."""
        assert self._standing is not None
        now = time.monotonic()
        if self._standing_cache is None or now - self._standing_cache[0] > STANDING_FRESH_S:
            if self._standing_read is None or self._standing_read.done():
                self._standing_read = asyncio.ensure_future(self._standing())
            read = self._standing_read  # one read for every page asking meanwhile
            self._standing_cache = (time.monotonic(), await asyncio.shield(read))
        return json_response(self._standing_cache[1])

    async def _id(self, _: web.Request) -> web.Response:
        return json_response(self._main_pubkey)

    async def _list_tasks(self, _: web.Request) -> web.Response:
        return json_response(
            [
                {"TaskName": t.context.name, "TaskID": t.context.task_id}
                for t in self._tasks.values()
            ]
        )

    def is_admin(self, request: web.Request) -> bool:
        if from_this_machine(request):
            return True
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return bool(self._admin_token) and secrets.compare_digest(
            token.encode(), self._admin_token.encode()
        )

    async def _phase(self, request: web.Request) -> web.Response:
        """Timer OFF: a developer calls each phase by hand, in the schedule's order."""
        if not self.is_admin(request):
            raise HttpError(403, "admin actions need loopback or a token")
        task = self._task(request.match_info["task_id"])
        body = await json_body(request)
        if not isinstance(body, dict):
            body = {}
        name, round_ = body.get("functionCall"), body.get("roundNumber")
        if name not in (*PHASE_NAMES, PAYOUT) or not is_round(round_):
            raise HttpError(
                422,
                "body must be {functionCall: a phase name or 'payout', roundNumber: integer >= 0}",
            )
        retry = bool(body.get("isPreviousRoundFailed", False))
        return json_response(await task.manual_phase(str(name), round_, retry))

    async def _proxy_request(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        return await self._proxy.handle(request, task_id, self._tasks.get(task_id))
