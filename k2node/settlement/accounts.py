"""The local K2's world as accounts, as `getAccountInfo` and `getProgramAccounts` show them.

A KOII task account holds its state as UTF-8 JSON, `is_allowlisted` first: the Desktop node
finds tasks with a memcmp filter on the bytes `{"is_allowlisted":true` at offset 0.
"""

from __future__ import annotations

import json
from typing import Any

from solders.system_program import ID as SYSTEM_PROGRAM

from k2node.b58 import b58decode
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


MAX_FILTERS = 4
MAX_MEMCMP_CHARS = 128  # Solana's own limit on a memcmp filter's base58 bytes


def parse_filters(filters: list[Filter]) -> list[tuple[int, bytes] | int]:
    """getProgramAccounts filters as (offset, bytes) for memcmp and ints for dataSize;
    ValueError for a malformed one (checked up front, whatever accounts there are)."""
    if len(filters) > MAX_FILTERS:
        raise ValueError(f"at most {MAX_FILTERS} filters")
    parsed: list[tuple[int, bytes] | int] = []
    for spec in filters:
        if not isinstance(spec, dict):
            raise ValueError("a filter is an object")
        size, memcmp = spec.get("dataSize"), spec.get("memcmp")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool):
                raise ValueError("dataSize must be an integer")
            parsed.append(size)
        elif isinstance(memcmp, dict):
            wanted, offset = memcmp.get("bytes"), memcmp.get("offset", 0)
            if not isinstance(wanted, str) or len(wanted) > MAX_MEMCMP_CHARS:
                raise ValueError(f"memcmp bytes must be base58 of at most {MAX_MEMCMP_CHARS}")
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ValueError("memcmp offset must be a non-negative integer")
            parsed.append((offset, b58decode(wanted)))
        else:
            raise ValueError("a filter is memcmp or dataSize")
    return parsed


def matches(data: bytes, filters: list[tuple[int, bytes] | int]) -> bool:
    for spec in filters:
        if isinstance(spec, int):
            if len(data) != spec:
                return False
        elif data[spec[0] : spec[0] + len(spec[1])] != spec[1]:
            return False
    return True


def program_accounts(
    world: World, program: str, filters: list[Filter]
) -> list[tuple[str, Account]]:
    """The program's accounts that pass `filters` (raises ValueError for a malformed one)."""
    parsed = parse_filters(filters)
    found = []
    for key, owned in world.accounts.items():
        if owned["owner"] != program:
            continue
        if key not in world.tasks and not _zeros_match(int(owned["space"]), parsed):
            continue  # (an account without data holds zeros: judged without building them)
        held = account(world, key)
        if held is not None and matches(held.data, parsed):
            found.append((key, held))
    return found


def _zeros_match(space: int, filters: list[tuple[int, bytes] | int]) -> bool:
    for spec in filters:
        if isinstance(spec, int):
            if space != spec:
                return False
        elif spec[0] + len(spec[1]) > space or any(spec[1]):
            return False
    return True
