"""The operator's commands, from their arguments to what they print."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from rich.console import Console

from k2node.config import Settings
from k2node.node.standing import Status, standing
from k2node.operator.money import (
    Plan,
    carry_out,
    koii,
    list_tasks,
    plan_claim,
    plan_stake,
    plan_unstake,
)
from k2node.operator.reach import OperatorError, Reach, reach


async def _confirmed(plan: Plan, yes: bool, console: Console) -> bool:
    console.print(f"This will {plan.says}.", soft_wrap=True)
    if yes:
        return True
    if not sys.stdin.isatty():
        raise OperatorError("not a terminal to ask on: add --yes to go ahead")
    answer = await asyncio.to_thread(input, "Go ahead? [y/N] ")  # the loop goes on meanwhile
    return answer.strip().lower() in ("y", "yes")


async def _act(r: Reach, plans: list[Plan], yes: bool, console: Console) -> int:
    for plan in plans:
        if not await _confirmed(plan, yes, console):
            console.print("Nothing done.")
            return 1
        signature = await carry_out(r, plan)
        console.print(f"{plan.done} (transaction {signature})", soft_wrap=True)
    return 0


def _print_status(found: Status, console: Console) -> None:
    node = "running" if found.node_running else "not running"
    console.print(f"node: {node}")
    console.print(
        f"main wallet {found.main_wallet['pubkey']}: {koii(found.main_wallet['balance'])}"
    )
    if found.staking_wallet is not None:
        staking = found.staking_wallet
        unstaked = staking["unstaked"]
        spare = f" ({koii(unstaked)} of it unstaked, for the next stake)" if unstaked else ""
        console.print(
            f"staking wallet {staking['pubkey']}: {koii(staking['balance'])}{spare}", soft_wrap=True
        )
    for t in found.tasks:
        console.print(f"\n[bold]{t.name or '?'}[/bold] {t.task_id}: {t.state}", soft_wrap=True)
        if not t.name:
            continue
        last = "never" if t.last_submission_round is None else f"round {t.last_submission_round}"
        rewards = ", ".join(f"round {r} {koii(v)}" for r, v in t.rewards.items()) or "none yet"
        lines = [
            f"round {t.round}, {t.phase} window, next round in {t.seconds_to_next_round:g} s",
            f"stake {koii(t.stake)} (minimum {koii(t.minimum_stake)}); last submission {last}; "
            f"votes against it {t.votes_against} (recent rounds)",
            f"rewards: {rewards}",
            f"claimable: {koii(t.claimable)}"
            + (f" (k2node claim {t.task_id})" if t.claimable > 0 else ""),
            f"bounty left {koii(t.bounty_left)}, {koii(t.bounty_per_round)} a round",
        ]
        if t.stake > 0 and t.unstake_opens_round is not None:
            wait_s = (
                t.unstake_opens_round - t.round - 1
            ) * t.round_seconds + t.seconds_to_next_round
            lines.append(
                f"unstaking opens at round {t.unstake_opens_round}, in about {wait_s:.0f} s "
                f"(3 rounds after the last submission; while the node runs this task it "
                f"submits every round: stop it first)"
            )
        elif t.stake > 0:
            lines.append(f"unstaking: open now (k2node unstake {t.task_id})")
        if t.variables:
            shown = ", ".join(f"{name} {state}" for name, state in t.variables.items())
            lines.append(f"task variables: {shown}")
        for line in lines:
            console.print(f"  {line}", soft_wrap=True)


async def operator_command(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    try:
        async with reach(settings) as r:
            if args.command == "status":
                staking = r.staking.pubkey if r.staking else None
                ids = r.task_ids(settings)
                found = await standing(
                    r.settlement, r.main.pubkey, staking, r.node_tasks, ids, settings
                )
                if args.json:
                    print(json.dumps(found.to_json(), indent=1))
                else:
                    _print_status(found, console)
                return 0
            if args.command == "tasks":
                rows = await list_tasks(r)
                if args.json:
                    print(json.dumps(rows, indent=1))
                    return 0
                for row in rows:
                    active = "active" if row["active"] else "stopped"
                    console.print(f"\n[bold]{row['name']}[/bold] {row['task_id']}: {active}")
                    console.print(
                        f"  bounty left {koii(row['bounty_left'])}, {koii(row['bounty_per_round'])}"
                        f" a round; minimum stake {koii(row['minimum_stake'])}; "
                        f"{row['nodes']} nodes",
                        soft_wrap=True,
                    )
                return 0
            if args.command == "stake":
                plans = [await plan_stake(r, args.task, args.amount)]
            elif args.command == "unstake":
                plans = [await plan_unstake(r, args.task)]
            else:  # claim
                ids = r.task_ids(settings) if args.all or not args.task else [args.task]
                plans = []
                for task_id in ids:
                    try:
                        plans.append(await plan_claim(r, task_id))
                    except OperatorError as exc:
                        if not args.all and args.task:
                            raise
                        console.print(f"{exc}")
                if not plans:
                    raise OperatorError("nothing to claim")
            return await _act(r, plans, args.yes, console)
    except OperatorError as exc:
        print(f"k2node {args.command}: {exc}", file=sys.stderr)
        return 1
