from __future__ import annotations

from k2node.contract.rounds import Schedule, Window

S = Schedule(starting_slot=100, round_time=20, submission_window=8, audit_window=8)


def test_round_of_at_the_edges() -> None:
    assert S.round_of(100) == 0
    assert S.round_of(119) == 0
    assert S.round_of(120) == 1
    assert S.round_of(99) == -1
    assert S.round_start(3) == 160


def test_windows_for_a_round_lie_in_the_following_rounds() -> None:
    assert S.submission_of(0) == Window(120, 128)
    assert S.audit_of(0) == Window(128, 136)
    assert S.distribution_of(0) == Window(140, 148)
    assert S.distribution_audit_of(0) == Window(148, 156)
    assert S.distribution_of(0, attempt=1) == Window(160, 168)
    assert S.payout_opens(0) == 156
    assert S.payout_opens(0, attempt=1) == 176
    assert 127 in S.submission_of(0) and 128 not in S.submission_of(0)
    assert 119 not in S.submission_of(0)
    assert "120" not in S.submission_of(0)
