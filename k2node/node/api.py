"""The node's HTTP surface (default port 30017): status, tasks, namespace RPC, task proxy."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from k2node import __version__
from k2node.node.events import EventHub
from k2node.node.namespace_rpc import NamespaceRpc, TaskContext
from k2node.node.registry import NodeRegistry
from k2node.protocol import MAX_RPC_BODY, NAMESPACE_PATH, PHASE_NAMES

log = structlog.get_logger("k2node.api")

# Hop-by-hop headers are the proxy's own business, never forwarded.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "host",
        "content-length",
        "proxy-authorization",
        "proxy-authenticate",
        "trailer",
    }
)
_LOOPBACK = frozenset({"127.0.0.1", "::1"})

ManualPhase = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """One error boundary: a status and a JSON message; tracebacks only in the log."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"message": exc.reason}, status=exc.status)
    except Exception:
        log.exception("api_error", path=request.path, method=request.method)
        return web.json_response({"message": "internal error"}, status=500)


class NodeApi:
    def __init__(
        self,
        contexts: Mapping[str, TaskContext],
        task_ports: Mapping[str, int],
        running: Callable[[str], bool],
        main_pubkey: str,
        admin_token: str,
        manual_phase: ManualPhase,
        events: EventHub | None = None,
    ) -> None:
        self._contexts = contexts
        self._task_ports = task_ports
        self._running = running
        self._main_pubkey = main_pubkey
        self._admin_token = admin_token
        self._manual_phase = manual_phase
        self.events = events or EventHub()
        self._rpc = NamespaceRpc(contexts, self.events)
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_RPC_BODY, middlewares=[json_errors])
        app.router.add_get("/", self._status)
        app.router.add_get("/id", self._id)
        app.router.add_get("/tasks", self._tasks)
        app.router.add_post(NAMESPACE_PATH, self._rpc.handle)
        app.router.add_get("/events", self.events.handle)
        app.router.add_routes(NodeRegistry(self._stake_list).routes())
        app.router.add_post("/admin/tasks/{task_id}/phase", self._phase)
        app.router.add_route("*", "/task/{task_id}/{path:.*}", self._proxy)
        app.cleanup_ctx.append(self._client)
        app.on_shutdown.append(lambda _: self.events.close())
        return app

    async def _client(self, _: web.Application) -> Any:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False
        )
        yield
        await self._session.close()

    async def _stake_list(self, task_id: str) -> dict[str, int] | None:
        ctx = self._contexts.get(task_id)
        if ctx is None:
            return None
        state = await ctx.agent.state({"is_stake_list_required": True})
        stakes: dict[str, int] = state["stake_list"]
        return stakes

    async def _status(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"status": "running", "version": __version__, "tasks": len(self._contexts)}
        )

    async def _id(self, _: web.Request) -> web.Response:
        return web.json_response(self._main_pubkey)

    async def _tasks(self, _: web.Request) -> web.Response:
        return web.json_response(
            [{"TaskName": c.name, "TaskID": c.task_id} for c in self._contexts.values()]
        )

    def is_admin(self, request: web.Request) -> bool:
        if request.remote in _LOOPBACK and "X-Forwarded-For" not in request.headers:
            return True
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return bool(self._admin_token) and secrets.compare_digest(
            token.encode(), self._admin_token.encode()
        )

    async def _phase(self, request: web.Request) -> web.Response:
        """Timer OFF: a developer calls each phase by hand, in the schedule's order."""
        if not self.is_admin(request):
            return web.json_response(
                {"message": "admin actions need loopback or a token"}, status=403
            )
        task_id = request.match_info["task_id"]
        if task_id not in self._contexts:
            return web.json_response({"message": f"unknown task {task_id[:64]}"}, status=404)
        try:
            body = await request.json()
        except ValueError:
            body = None
        name = body.get("functionCall") if isinstance(body, dict) else None
        round_ = body.get("roundNumber") if isinstance(body, dict) else None
        if name not in (*PHASE_NAMES, "payout") or not isinstance(round_, int) or round_ < 0:
            return web.json_response(
                {
                    "message": "body must be {functionCall: a phase name or 'payout', "
                    "roundNumber: integer >= 0}"
                },
                status=422,
            )
        assert isinstance(body, dict)
        return web.json_response(await self._manual_phase(task_id, body))

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        port = self._task_ports.get(task_id)
        if port is None or not self._running(task_id):
            return web.json_response({"message": f"Task {task_id[:64]} not running"}, status=422)
        assert self._session is not None
        url = f"http://127.0.0.1:{port}/{request.match_info['path']}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                url,
                params=request.query,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                out_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
                }
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response({"message": f"Task {task_id[:64]} not running"}, status=422)
