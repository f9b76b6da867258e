"""K2's PubSub WebSocket for `k2node k2`: `slotSubscribe` and `signatureSubscribe`, as
Solana clients use them (web3.js looks for it on the RPC port + 1).

Every subscriber of a connection hears of each new slot as the slot clock reaches it; a
signature subscription is answered once, when its transaction has been applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from k2node import codec
from k2node.contract.values import is_int
from k2node.logs import get_logger
from k2node.settlement.local import LocalK2

log = get_logger("k2node.k2")

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SUBSCRIPTIONS = 100  # per connection
MAX_CONNECTIONS = 256


class _Connection:
    def __init__(self, k2: LocalK2, socket: ServerConnection) -> None:
        self._k2 = k2
        self._socket = socket
        self._next_id = 1
        self._slots: set[int] = set()
        self._signatures: dict[int, str] = {}

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick(), name="pubsub-slots")
        try:
            async for raw in self._socket:
                await self._socket.send(codec.dumps_text(self._answer(raw)))
        except ConnectionClosed:
            pass
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    def _answer(self, raw: str | bytes) -> dict[str, Any]:
        try:
            call = codec.loads(raw)
        except ValueError:
            return _error(None, -32700, "not JSON")
        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            return _error(None, -32600, "not a JSON-RPC request")
        call_id, method, params = call.get("id"), call["method"], call.get("params") or []
        if not isinstance(params, list):
            return _error(call_id, -32602, "params must be an array")
        if method in ("slotSubscribe", "signatureSubscribe"):
            if len(self._slots) + len(self._signatures) >= MAX_SUBSCRIPTIONS:
                return _error(call_id, -32602, f"at most {MAX_SUBSCRIPTIONS} subscriptions")
            sub = self._next_id
            if method == "signatureSubscribe":
                if not params or not isinstance(params[0], str) or len(params[0]) > 100:
                    return _error(call_id, -32602, "signatureSubscribe takes a signature")
                self._signatures[sub] = params[0]
            else:
                self._slots.add(sub)
            self._next_id += 1
            return {"jsonrpc": "2.0", "result": sub, "id": call_id}
        if method in ("slotUnsubscribe", "signatureUnsubscribe"):
            gone = params[0] if params and is_int(params[0]) else -1
            known = gone in self._slots or gone in self._signatures
            self._slots.discard(gone)
            self._signatures.pop(gone, None)
            return {"jsonrpc": "2.0", "result": known, "id": call_id}
        return _error(call_id, -32601, f"Method not found: {method[:64]}")

    async def _tick(self) -> None:
        k2 = self._k2
        slot = k2.current_slot()
        while True:
            await asyncio.sleep(max(0.0, k2.wall_time_of_slot(slot + 1) - k2.time()))
            slot = k2.current_slot()
            for sub in list(self._slots):
                result = {"slot": slot, "parent": slot - 1, "root": max(0, slot - 32)}
                await self._notify("slotNotification", sub, result)
            for sub, signature in list(self._signatures.items()):
                applied = await k2.signature_slot(signature)
                if applied is not None:
                    del self._signatures[sub]
                    value = {"context": {"slot": slot}, "value": {"err": None}}
                    await self._notify("signatureNotification", sub, value)

    async def _notify(self, method: str, sub: int, result: Any) -> None:
        params = {"result": result, "subscription": sub}
        await self._socket.send(
            codec.dumps_text({"jsonrpc": "2.0", "method": method, "params": params})
        )


def _error(call_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": call_id}


@asynccontextmanager
async def pubsub(k2: LocalK2, host: str, port: int) -> AsyncIterator[Server]:
    """The PubSub WebSocket of `k2`, served while the context lasts."""

    open_connections = 0

    async def handle(socket: ServerConnection) -> None:
        nonlocal open_connections
        if open_connections >= MAX_CONNECTIONS:
            await socket.close(1013, "too many connections")
            return
        open_connections += 1
        try:
            await _Connection(k2, socket).run()
        finally:
            open_connections -= 1

    async with serve(handle, host, port, max_size=MAX_MESSAGE_BYTES) as server:
        yield server
