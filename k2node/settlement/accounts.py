"""The local K2's world as accounts, as `getAccountInfo` and `getProgramAccounts` show them.

A KOII task account holds its state as UTF-8 JSON, `is_allowlisted` first: the Desktop node
finds tasks with a memcmp filter on the bytes `{"is_allowlisted":true` at offset 0.
"""

from __future__ import annotations

import json
from typing import Any

import base58
from solders.system_program import ID as SYSTEM_PROGRAM

from k2node.settlement.base import Account
from k2node.settlement.wire import PROGRAM_ID
from k2node.settlement.world import World

UPGRADEABLE_LOADER = "BPFLoaderUpgradeab1e11111111111111111111111"
Filter = dict[str, Any]


def task_data(state: dict[str, Any]) -> bytes:
    ordered = {"is_allowlisted": state["is_allowlisted"], **state}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()


def account(world: World, pubkey: str) -> Account | None:
    lamports = world.balances.get(pubkey, 0)
    if pubkey == str(PROGRAM_ID):
        return Account(1, UPGRADEABLE_LOADER, b"", executable=True)
    state = world.tasks.get(pubkey)
    if state is not None:
        return Account(lamports, str(PROGRAM_ID), task_data(state))
    owned = world.accounts.get(pubkey)
    if owned is not None:
        return Account(lamports, owned["owner"], bytes(int(owned["space"])))
    if lamports > 0:
        return Account(lamports, str(SYSTEM_PROGRAM), b"")
    return None


def check_filters(filters: list[Filter]) -> None:
    """Refuse a malformed filter up front (ValueError), whatever accounts there are."""
    for spec in filters:
        if "dataSize" in spec and not isinstance(spec["dataSize"], int):
            raise ValueError("dataSize must be an integer")
        memcmp = spec.get("memcmp")
        if memcmp is not None:
            if not isinstance(memcmp, dict) or not isinstance(memcmp.get("bytes"), str):
                raise ValueError("memcmp needs bytes")
            base58.b58decode(memcmp["bytes"])
            if not isinstance(memcmp.get("offset", 0), int):
                raise ValueError("memcmp offset must be an integer")
        if "dataSize" not in spec and memcmp is None:
            raise ValueError("a filter is memcmp or dataSize")


def matches(data: bytes, filters: list[Filter]) -> bool:
    """Solana's getProgramAccounts filters: memcmp (base58 bytes at an offset), dataSize."""
    for spec in filters:
        if "dataSize" in spec and len(data) != spec["dataSize"]:
            return False
        memcmp = spec.get("memcmp")
        if memcmp is not None:
            wanted = base58.b58decode(memcmp["bytes"])
            offset = int(memcmp.get("offset", 0))
            if data[offset : offset + len(wanted)] != wanted:
                return False
    return True


def program_accounts(
    world: World, program: str, filters: list[Filter]
) -> list[tuple[str, Account]]:
    keys = [k for k, a in world.accounts.items() if a["owner"] == program]
    found = []
    for key in keys:
        held = account(world, key)
        if held is not None and matches(held.data, filters):
            found.append((key, held))
    return found
