"""How `k2node simulate` shows its run: a line per settled round, then a summary table and
the two answers an author needs (rich renders them; plain text when not on a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from k2node.testing.adversaries import Role
from k2node.testing.simulation import RoundReport, SimReport, koii


def _counts(by_role: dict[str, int]) -> str:
    return ", ".join(f"{n} {role}" for role, n in sorted(by_role.items())) or "none"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def round_line(rep: RoundReport) -> str:
    distributors = " then ".join(rep.distributors) or "nobody"
    retry = " (retried after PayoutFailed)" if rep.retried else ""
    return (
        f"round {rep.round}: {_n(rep.submissions, 'submission')}, "
        f"{_n(rep.audit_triggers, 'audit trigger')} ({rep.votes_against} against, "
        f"{rep.votes_for} for); list by "
        f"{distributors}{retry}: {rep.record or 'not settled'}; paid {koii(rep.paid_roe)} KOII "
        f"to {_counts(rep.rewarded)}; slashed {_counts(rep.slashed)}"
    )


def print_summary(report: SimReport, console: Console) -> None:
    table = Table(title=f"{report.nodes} nodes, {report.rounds} rounds, seed {report.seed}")
    for column in ("role", "nodes", "rewards (KOII)", "slashed (KOII)"):
        table.add_column(column, justify="left" if column == "role" else "right")
    for role in Role:
        if str(role) in report.roles:
            table.add_row(
                str(role),
                str(report.roles[role]),
                koii(report.rewards_roe.get(role, 0)),
                koii(report.slashes_roe.get(role, 0)),
            )
    console.print(table)
    console.print(f"PayoutFailed retries: {report.payout_retries}")
    honest, gained = report.honest_slashed, report.cheaters_gained
    slashed = (
        f"[red]yes, {len(honest)} times[/red] (first in round {honest[0]['round']})"
        if honest
        else "[green]never[/green]"
    )
    console.print(f"honest nodes slashed: {slashed}", soft_wrap=True)
    paid_off = (
        f"[red]yes, {len(gained)} times[/red] (first: {gained[0]['role']} in round "
        f"{gained[0]['round']})"
        if gained
        else "[green]never[/green]"
    )
    console.print(
        f"cheating paid off: {paid_off} (a lie or a greedy list paid, or pay without a "
        "submission; greedy distributors and false accusers are paid for the honest work "
        "they submit)",
        soft_wrap=True,
    )
    if report.honest_unpaid:
        console.print(
            f"honest submissions left unpaid: {len(report.honest_unpaid)} (first in round "
            f"{report.honest_unpaid[0]['round']}: the votes against them evened out the "
            "votes for)",
            soft_wrap=True,
        )
    if report.rounds_unpaid:
        console.print(f"rounds never paid: {', '.join(map(str, report.rounds_unpaid))}")
    console.print(f"simulated in {report.elapsed_s:.2f} s")
