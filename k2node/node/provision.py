"""Getting a task ready to run: wallets, deployment of the bundled example, funds, stake,
and the arguments its process starts with."""

from __future__ import annotations

import asyncio
import secrets
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solders.instruction import Instruction
from solders.keypair import Keypair as SoldersKeypair
from solders.pubkey import Pubkey

from k2node.config import ConfigError, Settings, load_task_config
from k2node.contract.launch import TASK_MODE, TaskArgs
from k2node.crypto import Keypair, load_or_create_wallet
from k2node.ipfs import IpfsBackend
from k2node.logs import get_logger
from k2node.node.agent import TaskAgent
from k2node.node.confine import rules_for
from k2node.node.context import TaskContext
from k2node.node.executables import TaskVariablesMissing, declared_for, executable
from k2node.node.ledger import Ledger
from k2node.node.process import TaskSpec
from k2node.node.processlimit import ProcessLimit
from k2node.settlement import transactions, wire
from k2node.settlement.base import Settlement, TransactionError
from k2node.settlement.system_ix import minimum_balance
from k2node.settlement.transactions import STAKE_POT_SEED_LAMPORTS
from k2node.store import Store

log = get_logger("k2node.node")

_SECRET_ALPHABET = string.ascii_letters + string.digits
# Where the node serves the embedded K2's JSON-RPC, for tasks that read K2 themselves.
K2_RPC_PATH = "/k2"
# What a wallet keeps beyond a stake or bounty for fees: 0.1 KOII, 10,000 two-signature actions.
FEES_RESERVE = 100_000_000
# where a node remembers the example it deployed (the operator's commands look too)
EXAMPLE_KEY = "deployed-example"


@dataclass(frozen=True)
class Wallets:
    main: Keypair  # the operator's: owns rewards, deploys tasks
    staking: Keypair  # signs every task action


def load_wallets(settings: Settings) -> Wallets:
    main, created = load_or_create_wallet(settings.wallet_location)
    if created:
        log.info("wallet_created", path=str(settings.wallet_location), pubkey=main.pubkey)
    staking, _ = load_or_create_wallet(settings.data_dir / "wallets" / "staking.json")
    return Wallets(main, staking)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ensure_balance(settlement: Settlement, key: str, amount: int) -> None:
    """Top `key` up from the K2's faucet (the embedded one, or a `k2node k2` devnet's)."""
    have = await settlement.get_balance(key)
    if have < amount:
        try:
            await settlement.airdrop(key, amount - have)
        except TransactionError as exc:
            log.warning("airdrop_refused", pubkey=key, error=str(exc))


def _task_fields(task_config: Path, executable_cid: str | None) -> tuple[dict[str, Any], int]:
    """A config-task.yml's instruction fields and account space; with `executable_cid`,
    nodes fetch the task's code from IPFS by that CID."""
    args = load_task_config(task_config)
    if executable_cid is not None:
        args |= {"task_audit_program": executable_cid, "task_executable_network": "IPFS"}
    space = args.pop("space")
    return {**args, "local_vars": ""}, space


async def _send(
    settlement: Settlement,
    instructions: list[Instruction],
    payer: Keypair,
    signers: list[SoldersKeypair],
) -> None:
    signed = await transactions.signed_now(settlement, instructions, wire.signer(payer), signers)
    await settlement.send(signed.wire)


async def deploy_task(
    settlement: Settlement,
    manager: Keypair,
    task_config: Path,
    executable_cid: str | None = None,
    task_key: SoldersKeypair | None = None,
) -> str:
    """Create a task from a config-task.yml as the create-task CLI does (a new task account
    and stake pot beside it), funding the manager's wallet from the faucet. `task_key`: the
    task account's key (a simulation's, derived from its seed); a new one by default."""
    fields, space = _task_fields(task_config, executable_cid)
    task, stake_pot = task_key or SoldersKeypair(), SoldersKeypair().pubkey()
    needs = fields["total_bounty_amount"] + minimum_balance(space) + STAKE_POT_SEED_LAMPORTS
    await ensure_balance(settlement, manager.pubkey, needs + FEES_RESERVE)
    payer = Pubkey.from_string(manager.pubkey)
    instructions = transactions.create_task(payer, task.pubkey(), stake_pot, fields, space)
    await _send(settlement, instructions, manager, [task])
    task_id = str(task.pubkey())
    log.info("task_deployed", task_id=task_id, name=fields["task_name"])
    return task_id


async def update_task(
    settlement: Settlement,
    manager: Keypair,
    old_task_id: str,
    task_config: Path,
    executable_cid: str | None = None,
) -> str:
    """A new version of a task this wallet manages, from a config-task.yml (its bounty is
    what remains of the old version's, which stops and names the new one). The new id."""
    old = await settlement.get_task_state(old_task_id)
    if old["task_manager"] != manager.pubkey:
        raise TransactionError(
            f"task {old_task_id} is managed by {old['task_manager']}, not by {manager.pubkey}"
        )
    fields, space = _task_fields(task_config, executable_cid)
    fields.pop("total_bounty_amount")
    task, stake_pot = SoldersKeypair(), SoldersKeypair().pubkey()
    needs = minimum_balance(space) + STAKE_POT_SEED_LAMPORTS
    await ensure_balance(settlement, manager.pubkey, needs + FEES_RESERVE)
    old_keys = (Pubkey.from_string(old_task_id), Pubkey.from_string(old["stake_pot_account"]))
    payer = Pubkey.from_string(manager.pubkey)
    instructions = transactions.update_task(
        payer, old_keys, (task.pubkey(), stake_pot), fields, space
    )
    await _send(settlement, instructions, manager, [task])
    task_id = str(task.pubkey())
    log.info("task_updated", task_id=task_id, previous=old_task_id, name=fields["task_name"])
    return task_id


async def example_task(
    store: Store, settlement: Settlement, manager: Keypair, task_config: Path
) -> str:
    """The bundled example, deployed once per data directory (embedded default). Its id is
    on disk before the task is created: after a power cut the node finds the task it may
    have created, rather than creating a second."""
    known = store.get(EXAMPLE_KEY)
    if isinstance(known, str):
        try:
            await settlement.get_task_state(known)
            return known
        except TransactionError:
            pass  # a K2 that does not know it (it never got there, or was wiped): again
    task_key = SoldersKeypair()
    store.put(EXAMPLE_KEY, str(task_key.pubkey()), sync=True)
    return await deploy_task(settlement, manager, task_config, task_key=task_key)


@dataclass(frozen=True)
class Provisioned:
    context: TaskContext
    spec: TaskSpec


async def provision_task(
    settings: Settings,
    settlement: Settlement,
    ledger: Ledger,
    wallets: Wallets,
    ipfs: IpfsBackend,
    task_id: str,
    stake: int,
    node_port: int,
    sockets: Path,
    processes: ProcessLimit | None = None,
) -> Provisioned:
    """Stake on `task_id`, settle what a stop left pending, and describe its process
    (`sockets`: the private folder where Python tasks serve their HTTP routes; `processes`:
    what holds its process count, none by default)."""
    try:
        state = await settlement.get_task_state(task_id)
    except TransactionError:
        raise ConfigError(f"TASKS: task {task_id} does not exist on K2") from None
    if state["is_migrated"]:  # its stake and rewards stay claimable; its rounds have ended
        raise ConfigError(
            f"TASKS: task {task_id} was updated to a new version, {state['migrated_to']}: "
            "run that one instead"
        )
    entry = await executable(state, settings.data_dir / "executables", ipfs, settings.task_entry)
    needed = await asyncio.to_thread(declared_for, entry, state, settings.task_config)
    missing = [name for name in needed if name not in settings.variables]
    if missing:  # names only: their values are the operator's secrets
        raise TaskVariablesMissing(
            f"the task reads {', '.join(missing)}: set {'them' if len(missing) > 1 else 'it'} "
            "in .env-local or the environment"
        )
    public_url = settings.public_url(node_port)
    base = settings.data_dir / "namespace" / task_id
    base.mkdir(parents=True, exist_ok=True)
    agent = TaskAgent(task_id, settlement, ledger, wallets.staking, wallets.main, base)
    stake = max(stake, int(state["minimum_stake_amount"]), 1)
    # the main wallet pays the stake into the staking account, and every action's fees
    needs = stake + transactions.STAKING_EXTRA + FEES_RESERVE
    await ensure_balance(
        settlement, wallets.main.pubkey, max(needs, settings.initial_staking_wallet_balance)
    )
    result = await agent.stake(stake, public_url)
    log.info("staked", task_id=task_id, stake=result.get("stake"))
    await ledger.reconcile(task_id)
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(20))
    rpc_url = settings.k2_node_url or f"{public_url}{K2_RPC_PATH}"
    transfers = task_id in settings.task_transfers
    context = TaskContext(
        agent,
        state["task_name"],
        secret,
        stake,
        public_url,
        ipfs,
        rpc_url,
        transfers,
        javascript=entry.endswith(".js"),
    )
    port = free_port()
    args = TaskArgs(
        name=state["task_name"],
        task_id=task_id,
        port=port,
        mode=TASK_MODE,
        main_pubkey=wallets.main.pubkey,
        secret=secret,
        k2_url=rpc_url,
        service_url=public_url,
        stake=str(stake),
        node_port=node_port,
    )
    # short names: a Unix socket's path is limited to about 100 bytes
    socket_dir = sockets / task_id[:16]
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    confined = rules_for(
        entry,
        [base, socket_dir],
        settings.task_sandbox,
        settings.task_memory_mb,
        settings.task_open_files,
        settings.task_processes,
        processes.group(task_id) if processes is not None else None,
        processes is not None and processes.by_rlimit,
    )
    spec = TaskSpec(
        args,
        entry,
        base / "task.log",
        task_vars={name: settings.variables[name] for name in needed},
        socket=socket_dir / "http.sock",
        confined=confined,
        phase_cpu_s=settings.task_phase_cpu_s,
    )
    return Provisioned(context, spec)
