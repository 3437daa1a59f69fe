"""SLA evaluation (market/sla.py): availability from liveness transitions, the queue-wait
percentile, the success rate, breaches with their evidence, and credits that are never owed
twice for one window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.market import ledger as L
from cpnet.market import sla

TERMS = sla.Terms(
    window_s=3600, credit_bps=1000, availability=0.99, max_queue_wait_s=60, success_rate=0.9
)


def att(i: int, placed: float, started=None, ended=None, state="COMPLETE", org="o1"):  # type: ignore[no-untyped-def]
    return sla.AttemptFact(f"a{i}", org, placed, started, ended, state)


def test_availability_counts_offline_time_from_the_transitions() -> None:
    # online before the window, offline 1000..1600: 600 s of 3600 lost
    moves = [(-50.0, True), (1000.0, False), (1600.0, True)]
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, moves, [])
    assert ev.observed_s == 3600 and ev.online_s == 3000
    assert ev.availability == pytest.approx(3000 / 3600)
    assert ev.offline == ((1000.0, 1600.0),)
    assert ev.breaches == ("availability",)
    assert ev.evidence()["availability"]["offline"] == [[1000.0, 1600.0]]


def test_time_before_the_first_transition_is_not_observed() -> None:
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, [(1800.0, True)], [])
    assert ev.observed_s == 1800 and ev.availability == 1.0 and not ev.breached
    none = sla.evaluate("p", TERMS, 0.0, 3600.0, [], [])
    assert none.availability is None and not none.breached  # no evidence: not judged


def test_queue_wait_is_judged_at_the_95th_percentile_and_counts_those_still_waiting() -> None:
    quick = [att(i, 10.0 * i, started=10.0 * i + 5, ended=10.0 * i + 9) for i in range(19)]
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, [(0.0, True)], quick)
    assert ev.wait_p95_s == 5 and not ev.breached
    # one of twenty still waiting at the end, placed 100 s before it: p95 (rank 19) is still 5
    waiting = [*quick, att(99, 3500.0)]
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, [(0.0, True)], waiting)
    assert ev.waits == 20 and ev.wait_p95_s == 5 and ev.slow == ("a99",)
    # two of twenty: the 95th percentile is a slow one
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, [(0.0, True)], [*waiting[1:], att(98, 3400.0)])
    assert ev.wait_p95_s == 100 and "queue_wait" in ev.breaches  # rank 19 of 20


def test_success_rate_counts_system_errors_against_and_the_users_own_failures_for() -> None:
    rows = [att(i, 1.0, 2.0, 3.0, "EXECUTOR_ERROR") for i in range(8)]
    rows += [att(8, 1.0, 2.0, 3.0, "CANCELED"), att(9, 1.0, 2.0, 3.0, "SYSTEM_ERROR")]
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, [(0.0, True)], rows)
    assert ev.ended == 9 and ev.lost == 1 and ev.lost_ids == ("a9",)
    assert ev.success_rate == pytest.approx(8 / 9) and ev.breaches == ("success_rate",)


def test_only_attempts_placed_in_the_window_count() -> None:
    rows = [
        att(1, -10.0, -5.0, 5.0, "SYSTEM_ERROR"),
        att(2, 3600.0, 3601.0, 3602.0, "SYSTEM_ERROR"),
    ]
    ev = sla.evaluate("p", TERMS, 0.0, 3600.0, [(0.0, True)], rows)
    assert ev.ended == 0 and ev.success_rate is None and ev.orgs == ()


def test_a_breach_credits_each_charged_org_its_share_once_per_window() -> None:
    started = att(1, 7300.0, started=7301.0, org="o1")
    ev = sla.evaluate("p", TERMS, 7200.0, 10800.0, [(0.0, False)], [started])
    assert ev.breaches == ("availability",)
    owed = sla.credits(ev, {"o1": 1234, "o2": 4}, now=11000.0)
    assert [(t.credit, t.amount) for t in owed] == [("org:o1", 123)]  # o2's 0.4 rounds to 0
    (t,) = owed
    assert t.debit == L.SLA and t.kind is L.TransferKind.CREDIT
    assert t.id == sla.credit_id("p", 7200.0, "o1") == "sla:p:7200:o1"
    again = sla.credits(ev, {"o1": 1234}, now=99999.0)  # a re-run: the same transfer content
    assert again[0].id == t.id and again[0].content() == t.content()
    met = sla.evaluate("p", TERMS, 7200.0, 10800.0, [(0.0, True)], [])
    assert sla.credits(met, {"o1": 1234}, now=11000.0) == ()


def test_due_windows_start_after_the_terms_and_after_the_last_evaluated() -> None:
    # terms set at 100: the first whole window is 120..180; 60..120 began before them
    assert sla.due_windows(set_at=100.0, window_s=60.0, last_end=None, now=230.0) == [
        (120.0, 180.0)
    ]
    assert sla.due_windows(100.0, 60.0, 180.0, 230.0) == []  # 180..240 has not ended
    assert sla.due_windows(100.0, 60.0, 180.0, 299.0) == [(180.0, 240.0)]
    assert len(sla.due_windows(0.0, 60.0, None, 60.0 * 100, most=24)) == 24


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"window_s": 10.0}, "window_s"),
        ({"credit_bps": 0}, "credit_bps"),
        ({"credit_bps": 10_001}, "credit_bps"),
        ({"availability": 1.5}, "availability"),
        ({"max_queue_wait_s": 7200.0}, "max_queue_wait_s"),
        ({"availability": None, "max_queue_wait_s": None, "success_rate": None}, "availability"),
    ],
)
def test_terms_out_of_bounds_name_the_term(change: dict, field: str) -> None:
    from dataclasses import replace

    with pytest.raises(sla.TermsError) as err:
        replace(TERMS, **change).check()
    assert err.value.field == field


moves = st.lists(st.tuples(st.floats(-100, 4000, allow_nan=False), st.booleans()), max_size=20).map(
    sorted
)


@given(moves)
def test_online_time_never_exceeds_observed_time_or_the_window(ts) -> None:  # type: ignore[no-untyped-def]
    observed, online, offline = sla.online_seconds(ts, 0.0, 3600.0)
    assert 0 <= online <= observed + 1e-6  # float sums of interval lengths
    assert observed <= 3600 + 1e-6
    assert sum(b - a for a, b in offline) == pytest.approx(observed - online, abs=1e-6)


@given(st.integers(0, 10**12), st.integers(1, 10_000))
def test_a_credit_is_never_more_than_what_was_charged(charged: int, bps: int) -> None:
    assert 0 <= sla.credit_amount(charged, bps) <= charged


def test_the_worked_example_in_docs_market_md() -> None:
    day = sla.Terms(window_s=86400, credit_bps=1000, availability=0.99)
    lost = [(0.0, True), (40_000.0, False), (41_800.0, True)]  # 30 minutes offline
    ev = sla.evaluate("p", day, 0.0, 86400.0, lost, [att(1, 10.0, 11.0, 20.0, org="o")])
    assert round(ev.availability, 3) == 0.979 and ev.breaches == ("availability",)
    (t,) = sla.credits(ev, {"o": 12_000}, now=86_401.0)
    assert (t.debit, t.credit, t.amount) == (L.SLA, "org:o", 1_200)


def test_a_window_waits_for_its_attempts_to_end_but_not_for_ever() -> None:
    assert sla.ready(end=3600, window_s=3600, unfinished=0, now=3600)
    assert not sla.ready(end=3600, window_s=3600, unfinished=2, now=3601)  # charges not settled
    assert sla.ready(end=3600, window_s=3600, unfinished=2, now=7200)  # a window later: go
    assert not sla.ready(end=3600, window_s=3600, unfinished=0, now=3599)
