"""NamespaceWrapper: a task's handle on its node (chain calls) and on its own LevelDB."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aiohttp

from k2node import codec
from k2node.b58 import b58encode
from k2node.codec import JSON_HEADERS
from k2node.contract.jsjson import sha256_hex, stringify
from k2node.contract.methods import NAMESPACE_PATH, Method
from k2node.contract.shared import freeze, remembered
from k2node.crypto import verify_signature as _verify_signature
from k2node.store import Store
from k2node.task.peers import Peer, PeerError, get_json, peers_of, websocket


class NamespaceError(Exception):
    """The node refused or failed a namespace call; the message is the node's."""


class NamespaceWrapper:
    def __init__(
        self, task_id: str, secret: str, node_url: str, session: aiohttp.ClientSession
    ) -> None:
        self.task_id = task_id
        self._secret = secret
        self._url = node_url.rstrip("/") + NAMESPACE_PATH
        self._session = session
        self._store: Store | None = None
        self._submitter: str | None = None

    async def call(self, method: Method, *params: Any) -> Any:
        """Call a wire method of the namespace RPC (K2-CONTRACT names) and return its answer."""
        body = {"args": [method, *params], "taskId": self.task_id, "secret": self._secret}
        try:
            async with self._session.post(
                self._url, data=codec.dumps(body), headers=JSON_HEADERS
            ) as resp:
                answer = codec.loads(await resp.read())
                status = resp.status
        except (aiohttp.ClientError, ValueError) as exc:
            raise NamespaceError(f"{method}: node unreachable or bad answer: {exc}") from None
        if status != 200 or not isinstance(answer, dict) or "response" not in answer:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise NamespaceError(f"{method}: {message} (HTTP {status})")
        return answer["response"]

    # -- local database ------------------------------------------------------------------
    async def open_store(self) -> None:
        self._store = Store.open(Path(await self.get_task_level_db_path()))

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()

    def _db(self) -> Store:
        if self._store is None:
            raise NamespaceError("the task database is not open yet")
        return self._store

    async def store_get(self, key: str) -> Any:
        return self._db().get(f"kv/{key}")

    async def store_set(self, key: str, value: Any) -> None:
        self._db().put(f"kv/{key}", value)

    async def store_delete(self, key: str) -> None:
        self._db().delete(f"kv/{key}")

    # -- chain reads -----------------------------------------------------------------------
    async def get_slot(self) -> int:
        return int(await self.call(Method.GET_CURRENT_SLOT))

    async def get_round(self) -> int:
        return int(await self.call(Method.GET_ROUND))

    async def get_average_slot_time(self) -> float:
        return float(await self.call(Method.GET_AVERAGE_SLOT_TIME))

    async def get_task_state(self, options: dict[str, bool] | None = None) -> dict[str, Any]:
        state: dict[str, Any] = await self.call(Method.GET_TASK_STATE, options or {})
        return state

    # -- peers: the task's other nodes -----------------------------------------------------
    async def peers(self) -> list[Peer]:
        """The other nodes of this task (staking key and base URL), this node left out."""
        state = await self.get_task_state({})
        return peers_of(state.get("ip_address_list", {}), await self.get_submitter_pubkey())

    async def peer_json(
        self, peer: Peer, path: str, timeout_s: float = 5.0, retries: int = 2
    ) -> Any:
        """GET one of this task's routes on `peer`: its JSON, or PeerError within timeout_s."""
        url = peer.task_url(self.task_id, path)
        return await get_json(self._session, peer, url, timeout_s, retries)

    async def ask_peers(self, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Every peer's JSON at `path`, asked at once; a PeerError for each that failed.
        Returns within `timeout_s`, however the peers behave."""
        found = await self.peers()
        answers = await asyncio.gather(
            *(self.peer_json(peer, path, timeout_s) for peer in found), return_exceptions=True
        )
        for answer in answers:  # anything else is a bug of ours, not a peer's failure
            if isinstance(answer, BaseException) and not isinstance(answer, PeerError):
                raise answer
        return {peer.staking_key: answer for peer, answer in zip(found, answers, strict=True)}

    async def peer_websocket(
        self, peer: Peer, path: str, timeout_s: float = 5.0
    ) -> aiohttp.ClientWebSocketResponse:
        """A WebSocket to one of this task's routes on `peer`; close it when done."""
        return await websocket(self._session, peer, peer.task_url(self.task_id, path), timeout_s)

    async def get_task_submission_info(self, round_: int) -> dict[str, Any]:
        info: dict[str, Any] = await self.call(Method.GET_TASK_SUBMISSION_INFO, round_)
        return info

    async def get_task_distribution_info(self, round_: int) -> dict[str, Any]:
        info: dict[str, Any] = await self.call(Method.GET_TASK_DISTRIBUTION_INFO, round_)
        return info

    async def get_distribution_list(self, submitter: str, round_: int) -> dict[str, Any] | None:
        raw = await self.call(Method.GET_DISTRIBUTION_LIST, submitter, round_)
        if raw is None:
            return None
        parsed = _parsed_list(raw) if isinstance(raw, str) else raw
        return parsed if isinstance(parsed, dict) else None

    async def get_submitter_account(self) -> dict[str, Any]:
        account: dict[str, Any] = await self.call(Method.GET_SUBMITTER_ACCOUNT)
        return account

    async def get_submitter_pubkey(self) -> str:
        if self._submitter is None:
            account = await self.get_submitter_account()
            raw = bytes.fromhex(account["_keypair"]["publicKey"]["_bn"].rjust(64, "0"))
            self._submitter = b58encode(raw)
        return self._submitter

    # -- chain writes (the node signs with its staking key) ----------------------------------
    async def check_submission_and_update_round(self, value: str, round_: int) -> Any:
        return await self.call(Method.CHECK_SUBMISSION_AND_UPDATE_ROUND, value, round_)

    async def audit_submission(self, candidate: str, is_valid: bool, round_: int) -> Any:
        return await self.call(Method.AUDIT_SUBMISSION, candidate, is_valid, round_)

    async def distribution_list_audit_submission(
        self, candidate: str, is_valid: bool, round_: int
    ) -> Any:
        return await self.call(
            Method.DISTRIBUTION_LIST_AUDIT_SUBMISSION, candidate, is_valid, round_
        )

    async def upload_distribution_list(self, distribution: dict[str, int], round_: int) -> Any:
        return await self.call(Method.UPLOAD_DISTRIBUTION_LIST, distribution, round_)

    async def distribution_list_submission_on_chain(self, round_: int) -> Any:
        return await self.call(Method.DISTRIBUTION_LIST_SUBMISSION_ON_CHAIN, round_)

    async def payout_trigger(self, round_: int) -> Any:
        return await self.call(Method.PAYLOAD_TRIGGER, round_)

    async def stake_on_chain(self) -> Any:
        return await self.call(Method.STAKE_ON_CHAIN)

    async def claim_reward(self) -> Any:
        return await self.call(Method.CLAIM_REWARD)

    # -- signing -------------------------------------------------------------------------
    async def payload_signing(self, body: Any) -> str:
        return str(await self.call(Method.SIGN_DATA, body))

    async def verify_signature(self, signed: str, pubkey: str) -> dict[str, str]:
        return _verify_signature(signed, pubkey)

    # -- IPFS (the node's store, embedded or kubo; every byte verified against its CID) ------
    async def ipfs_upload(self, files: dict[str, bytes | str], cid_version: int = 0) -> str:
        """Files wrapped in one directory (as the template uploads); the directory's CID."""
        encoded = {
            name: base64.b64encode(data.encode() if isinstance(data, str) else data).decode()
            for name, data in files.items()
        }
        return str(await self.call(Method.IPFS_UPLOAD, encoded, cid_version))

    async def ipfs_upload_bytes(self, data: bytes, cid_version: int = 0) -> str:
        return str(
            await self.call(Method.IPFS_UPLOAD_FILE, base64.b64encode(data).decode(), cid_version)
        )

    async def ipfs_upload_json(self, value: Any, name: str, cid_version: int = 0) -> str:
        """`value` as JSON in a file `name`, wrapped in a directory; the directory's CID."""
        return await self.ipfs_upload({name: stringify(value)}, cid_version)

    async def ipfs_upload_file(self, path: Path, cid_version: int = 0) -> str:
        """A local file of the task's (at most a few MB: it travels inside the RPC body)."""
        data = await asyncio.to_thread(path.read_bytes)
        return await self.ipfs_upload({path.name: data}, cid_version)

    async def ipfs_get(self, cid: str, path: str = "", max_bytes: int = 1024 * 1024) -> bytes:
        return base64.b64decode(await self.call(Method.IPFS_GET, cid, path, max_bytes))

    async def ipfs_get_json(self, cid: str, path: str = "", max_bytes: int = 1024 * 1024) -> Any:
        return codec.loads(await self.ipfs_get(cid, path, max_bytes))

    async def sign_submission(self, submission: Any) -> dict[str, Any]:
        """`{signedMessage, submission}`: the template's signed submission, the message being
        sha256_hex of the submission's JSON.stringify."""
        signed = await self.payload_signing(sha256_hex(stringify(submission)))
        return {"signedMessage": signed, "submission": submission}

    async def upload_signed_submission(self, round_: int, submission: Any) -> str:
        """The template's IPFS submission mode: `submissionValues<round>.json` holding the
        signed submission. Returns its CID."""
        return await self.upload_signed(round_, await self.sign_submission(submission))

    async def upload_signed(self, round_: int, signed: dict[str, Any]) -> str:
        return await self.ipfs_upload({f"submissionValues{round_}.json": stringify(signed)})

    async def fetch_signed_submission(self, cid: str, round_: int, submitter: str) -> Any:
        """The submission behind `cid` if its signer is `submitter` and the signed digest
        matches its content; None otherwise (what an auditor votes false on)."""
        try:
            raw = await self.ipfs_get(cid, f"submissionValues{round_}.json")
            body = codec.loads(raw)
        except (NamespaceError, ValueError):
            return None
        return open_signed_submission(body, submitter)

    # -- node services -------------------------------------------------------------------
    async def get_task_level_db_path(self) -> str:
        return str(await self.call(Method.GET_TASK_LEVEL_DB_PATH))

    async def get_base_path(self) -> str:
        return str(await self.call(Method.GET_BASE_PATH))

    async def fs(self, method: str, path: str, *args: Any) -> Any:
        """A Node.js `fs` method on a path inside the task's folder."""
        return await self.call(Method.FS, method, path, *args)

    async def logger(self, level: str, message: str, action: str = "") -> Any:
        return await self.call(Method.LOGGER, level, message, action)

    async def get_rpc_url(self) -> str:
        return str(await self.call(Method.GET_RPC_URL))

    async def get_task_node_version(self) -> str:
        return str(await self.call(Method.GET_TASK_NODE_VERSION))


@remembered()
def _parsed_list(text: str) -> Any:
    """A distribution list's JSON, read-only: the same text is parsed once (the nodes of a
    simulation, in one process, all read the same list)."""
    return freeze(codec.loads(text))


def open_signed_submission(signed: Any, submitter: str) -> Any:
    """The submission in a `{signedMessage, submission}` if `submitter` signed its digest;
    None otherwise. The same check wherever the body came from (IPFS, a peer's feed)."""
    try:
        opened = _verify_signature(signed["signedMessage"], submitter)
        if "data" not in opened:
            return None
        if codec.loads(opened["data"]) != sha256_hex(stringify(signed["submission"])):
            return None
        return signed["submission"]
    except (ValueError, KeyError, TypeError):
        return None
