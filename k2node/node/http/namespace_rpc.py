"""`POST /namespace-wrapper`: the calls a task process makes to its node (K2-CONTRACT)."""

from __future__ import annotations

import functools
import inspect
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from k2node.contract.methods import CHAIN_ACTIONS, PUBLISHES
from k2node.contract.values import is_int
from k2node.http_errors import HttpError, json_body, json_response, short
from k2node.ipfs import IpfsError
from k2node.logs import get_logger
from k2node.node.agent import ActionError
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http import rpc_chain, rpc_files  # noqa: F401 - they register their methods
from k2node.node.http.rpc_methods import METHODS, Handler
from k2node.settlement.base import TransactionError

__all__ = ["METHODS", "MethodRefused", "NamespaceRpc", "call_method"]

log = get_logger("k2node.rpc")

ContextOf = Callable[[str], TaskContext | None]
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def from_this_machine(request: web.Request) -> bool:
    """Sent from loopback, and not forwarded there by a proxy for someone else."""
    return request.remote in LOOPBACK and "X-Forwarded-For" not in request.headers


# Methods logged as one event each: they change K2's state or publish content.
_LOGGED = CHAIN_ACTIONS | PUBLISHES


@functools.cache
def _arity(fn: Handler) -> tuple[int, float]:
    """How many positional arguments a handler takes after its context: at least, at most.
    (Binding its signature on every call cost more than many a method.)"""
    fewest, most = 0, 0.0
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind is param.VAR_POSITIONAL:
            most = float("inf")
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            fewest += param.default is param.empty
    return fewest, most


def _arity_ok(fn: Handler, params: list[Any]) -> bool:
    fewest, most = _arity(fn)
    return fewest <= len(params) <= most


class MethodRefused(Exception):
    """A namespace call the node does not carry out: its HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def call_method(ctx: TaskContext, name: str, params: list[Any], events: EventHub) -> Any:
    """Carry out one namespace method for the task of `ctx`: what the HTTP surface serves,
    and what k2node.testing calls in-process."""
    fn = METHODS.get(name)
    if fn is None:
        raise MethodRefused(422, f"unknown method {name[:64]!r}")
    if not _arity_ok(fn, params):
        raise MethodRefused(422, f"wrong number of arguments for {name}")
    try:
        result = await fn(ctx, *params)
    except (ActionError, TransactionError, IpfsError, ValueError, OSError) as exc:
        reason = short(str(exc))  # it may quote the arguments: the log needs no more of them
        if name in _LOGGED:  # an action refused: an event (and a metric) of its own
            events.emit("rpc_refused", task_id=ctx.task_id, method=name, error=reason)
        else:
            log.info("rpc_refused", task_id=ctx.task_id, method=name, error=reason)
        raise MethodRefused(422, f"{name}: {reason}") from None
    if name in _LOGGED:
        # a chain action's last argument is its round (a publication's is a CID version)
        chain = name in CHAIN_ACTIONS and params and is_int(params[-1])
        round_ = params[-1] if chain else None
        events.emit("rpc_action", task_id=ctx.task_id, method=name, round=round_, result=result)
    return result


class NamespaceRpc:
    def __init__(self, context_of: ContextOf, events: EventHub) -> None:
        self._context_of = context_of
        self._events = events

    async def handle(self, request: web.Request) -> web.Response:
        # the node's own tasks run on this machine: whatever SERVER_HOST exposes, the RPC
        # (and the staking key it signs with) is not for the network
        if not from_this_machine(request):
            raise HttpError(403, "the namespace RPC answers this node's own tasks only")
        body = await json_body(request)
        if not isinstance(body, dict):
            raise HttpError(422, "body must be a JSON object")
        args, task_id, secret = body.get("args"), body.get("taskId"), body.get("secret")
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            raise HttpError(422, "args must be a non-empty array starting with the method name")
        if not isinstance(task_id, str) or not task_id:
            raise HttpError(422, "taskId is required")
        if not isinstance(secret, str) or not secret:
            raise HttpError(422, "secret is required")
        ctx = self._context_of(task_id)
        if ctx is None or not secrets.compare_digest(ctx.secret.encode(), secret.encode()):
            raise HttpError(401, "Invalid secret provided")
        try:
            result = await call_method(ctx, args[0], args[1:], self._events)
        except MethodRefused as exc:
            raise HttpError(exc.status, str(exc)) from None
        return json_response({"response": result})
