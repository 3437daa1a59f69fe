"""Leadership (hub/leader.py) and the wake-up channel (hub/broadcast.py) on a real PostgreSQL:
two claimants in one process stand for two replicas (each has its own connection)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from cpnet.hub.broadcast import MAX_PAYLOAD, Broadcast, payloads
from cpnet.hub.leader import Leadership, Serialised
from cpnet.hub.notify import Notifier
from cpnet.store.db import Store


def test_payloads_split_under_the_limit_and_keep_every_site():
    sites = {f"site-{i:05d}-{'x' * 30}" for i in range(800)}
    out = payloads("host:1", True, False, sites)
    assert len(out) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in out)
    got = [json.loads(p) for p in out]
    assert {s for g in got for s in g["t"]} == sites
    assert [g["s"] for g in got].count(True) == 1  # the scheduler is woken once
    assert payloads("host:1", False, False, ()) == []


async def _until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.postgres
def test_one_leader_at_a_time_and_failover_on_release(postgres_url: str):
    Store(postgres_url).migrate()
    changes: list[tuple[str, bool]] = []

    async def main() -> None:
        a = Leadership(postgres_url, lambda on: changes.append(("a", on)), poll_s=0.2)
        b = Leadership(postgres_url, lambda on: changes.append(("b", on)), poll_s=0.2)
        ta = asyncio.create_task(a.run())
        await _until(lambda: a.leading, 30, "a to lead")
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(1.0)  # b tries the lock several times meanwhile
        assert a.leading and not b.leading
        ta.cancel()  # a stops: its session ends, the lock with it
        await asyncio.gather(ta, return_exceptions=True)
        assert not a.leading
        await _until(lambda: b.leading, 30, "b to take over")
        tb.cancel()
        await asyncio.gather(tb, return_exceptions=True)

    asyncio.run(main())
    assert changes == [("a", True), ("a", False), ("b", True), ("b", False)]


def test_alone_leads_at_once(tmp_path):
    seen: list[bool] = []
    lead = Leadership(None, seen.append)
    asyncio.run(lead.run())
    assert lead.alone and lead.leading and seen == [True]


@pytest.mark.postgres
def test_serialised_transactions_queue_behind_each_other(postgres_url: str):
    store = Store(postgres_url)
    store.migrate()
    sweeps = Serialised(store)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with sweeps.tx():
            inside.set()
            release.wait(30)
            order.append("first")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(30)

    def second() -> None:
        with sweeps.tx():
            order.append("second")

    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(1.0)
    assert t2.is_alive() and order == []  # waiting for the first transaction's lock
    release.set()
    t.join(30)
    t2.join(30)
    assert order == ["first", "second"]
    store.close()


@pytest.mark.postgres
def test_a_notification_wakes_the_other_replica_and_not_the_sender(postgres_url: str):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        na, nb = Notifier(loop), Notifier(loop)
        a = Broadcast(postgres_url, na, "a")
        b = Broadcast(postgres_url, nb, "b")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        await _until(lambda: a.listening and b.listening, 30, "both listening")
        await asyncio.sleep(0.1)
        for n in (na, nb):  # the wake-everything of the first connection
            n.scheduler.clear()
            for sid in ("s1", "s2"):
                n.site_event(sid).clear()
        a.publish(scheduler=True, sites=["s1"])
        await asyncio.wait_for(nb.site_event("s1").wait(), 30)
        await asyncio.wait_for(nb.scheduler.wait(), 30)
        assert not nb.site_event("s2").is_set()
        assert b.received == 1 and a.received == 0  # a skipped its own
        assert not na.site_event("s1").is_set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.postgres
def test_tasks_changed_on_one_replica_wakes_the_readers_waiting_on_another(postgres_url: str):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        na, nb = Notifier(loop), Notifier(loop)
        a = Broadcast(postgres_url, na, "a")
        b = Broadcast(postgres_url, nb, "b")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        await _until(lambda: a.listening and b.listening, 30, "both listening")
        waiting = nb.change_event()  # taken, as a waiting GET takes it, before the change
        mine = na.change_event()
        a.publish(changed=True)
        await asyncio.wait_for(waiting.wait(), 30)
        assert nb.change_event() is not waiting  # the next change has a fresh event
        assert not mine.is_set()  # the sender's own readers are woken by the sender itself
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
