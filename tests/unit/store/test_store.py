"""The store against both SQLite and a real PostgreSQL: migrations, tasks, capacity, retries."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from cpnet.auth.model import Principal, Role
from cpnet.errors import Conflict, NotFound
from cpnet.hub.scheduling import schedule_once
from cpnet.registry.model import Heartbeat, PoolDescriptor, Region, Registration
from cpnet.sched import Resources
from cpnet.store import accounts, registry
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt, Pool, Task
from cpnet.tasks.model import AttemptUpdate, TaskSpec
from cpnet.tasks.states import State


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _world(store: Store, cores: float = 4, n_sites: int = 1):
    """An org with a user, a provider and `n_sites` sites each with one pool of `cores` cores."""
    now = time.time()
    with store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        user = accounts.create_user(s, org.id, "alice", Role.USER, now)
        prov = registry.create_provider(s, org.id, "ACME Cloud", "cn.dev", now)
        sites = []
        for i in range(n_sites):
            site = registry.create_site(
                s, prov, name=f"site{i}", type="general", region=Region(code="440300"), now=now
            )
            reg = Registration(
                pools=[PoolDescriptor(name="cpu", hardware={"cpu_cores": cores, "memory_gb": 64})]
            )
            registry.register(s, site.id, reg, now)
            sites.append(site.id)
    who = Principal(token_id="t", role=Role.USER, org_id=org.id, user_id=user.id)
    return who, sites


def _spec(**kw) -> TaskSpec:
    return TaskSpec(executors=[{"command": ["true"]}], **kw)


def test_migrations_are_idempotent(store: Store) -> None:
    store.migrate()  # a second run on a current schema changes nothing
    with store.tx() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 0


def test_idempotency_key_returns_the_original(store: Store) -> None:
    who, _ = _world(store)
    with store.tx() as s:
        t1, created1 = ts.create_task(s, who, _spec(idempotency_key="k"), time.time())
    with store.tx() as s:
        t2, created2 = ts.create_task(s, who, _spec(idempotency_key="k", name="other"), time.time())
    assert created1 and not created2 and t1.id == t2.id
    with store.tx() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 1


def test_other_org_cannot_see_a_task(store: Store) -> None:
    who, _ = _world(store)
    with store.tx() as s:
        t, _ = ts.create_task(s, who, _spec(), time.time())
        org_b = accounts.create_org(s, "beta", time.time())
    stranger = Principal(token_id="x", role=Role.USER, org_id=org_b.id)
    with store.tx() as s, pytest.raises(NotFound):
        ts.get_task(s, stranger, t.id)


def test_cursor_pagination_visits_every_task_once(store: Store) -> None:
    who, _ = _world(store)
    with store.tx() as s:
        ids = {ts.create_task(s, who, _spec(name=f"t{i}"), time.time())[0].id for i in range(25)}
    seen, cursor = [], None
    while True:
        with store.tx() as s:
            page, cursor = ts.list_tasks(s, who, ts.TaskFilter(), 7, cursor)
            seen += [t.id for t in page]
        if cursor is None:
            break
    assert len(seen) == 25 and set(seen) == ids


def test_concurrent_placements_never_oversubscribe(store: Store) -> None:
    """Four threads race to place 40 one-core tasks on 10 cores: exactly 10 win."""
    who, sites = _world(store, cores=10)
    with store.tx() as s:
        tasks = [ts.create_task(s, who, _spec(), time.time())[0].id for _ in range(40)]
        pool_id = s.scalar(select(Pool.id))
    demand = Resources(cpu_cores=1.0, ram_gb=0.5, disk_gb=0.0, gpus=0)
    wins, errors = [], []

    def worker(chunk: list[str]) -> None:
        for tid in chunk:
            try:
                with store.tx() as s:
                    task = s.scalar(select(Task).where(Task.id == tid))
                    if ts.place(s, task, pool_id, sites[0], demand, time.time(), "test"):
                        wins.append(tid)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tasks[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(wins) == 10
    with store.tx() as s:
        assert s.scalar(select(Pool.reserved_cpu)) == pytest.approx(10.0)


def _finish(store: Store, site: str, attempt_id: str, *states: State) -> list[ts.UpdateResult]:
    out = []
    with store.tx() as s:
        for st in states:
            u = AttemptUpdate(attempt_id=attempt_id, state=st, at=datetime.now(UTC))
            out.append(ts.apply_update(s, site, u, time.time()))
    return out


def test_schedule_run_complete_releases_capacity(store: Store) -> None:
    who, sites = _world(store, cores=2)
    with store.tx() as s:
        t, _ = ts.create_task(s, who, _spec(), time.time())
    assert schedule_once(store, time.time()).placed == 1
    with store.tx() as s:
        a = s.scalar(select(Attempt))
        assert [x["attempt_id"] for x in ts.assignments(s, sites[0], time.time(), 10)] == [a.id]
    res = _finish(store, sites[0], a.id, State.INITIALIZING, State.RUNNING, State.COMPLETE)
    assert [r.status for r in res] == ["applied"] * 3
    # The same report again is harmless; an illegal one is refused, never applied.
    again = _finish(store, sites[0], a.id, State.COMPLETE, State.RUNNING)
    assert [r.status for r in again] == ["duplicate", "rejected"]
    with store.tx() as s:
        assert State(s.scalar(select(Task.state))) is State.COMPLETE
        assert s.scalar(select(Pool.reserved_cpu)) == pytest.approx(0.0)
        kinds = [(e.from_state, e.to_state) for e in ts.events_of(s, t.id)]
    assert kinds[-1] == (State.RUNNING, State.COMPLETE)


def test_agent_cannot_report_for_another_site(store: Store) -> None:
    who, sites = _world(store, n_sites=2)
    with store.tx() as s:
        ts.create_task(s, who, _spec(), time.time())
    schedule_once(store, time.time())
    with store.tx() as s:
        a = s.scalar(select(Attempt))
    other = next(x for x in sites if x != a.site_id)
    (res,) = _finish(store, other, a.id, State.RUNNING)
    assert res.status == "rejected"
    with store.tx() as s:
        assert State(s.scalar(select(Attempt.state))) is State.QUEUED


def test_lost_site_requeues_then_gives_up_after_max_attempts(store: Store) -> None:
    who, sites = _world(store, n_sites=1)
    with store.tx() as s:
        t, _ = ts.create_task(s, who, _spec(max_attempts=2), time.time())
    for attempt in (1, 2):
        assert schedule_once(store, time.time()).placed == 1
        with store.tx() as s:
            assert ts.fail_site(s, sites[0], time.time(), "site lost") == 1
            state = State(s.scalar(select(Task.state).where(Task.id == t.id)))
        assert state is (State.QUEUED if attempt == 1 else State.SYSTEM_ERROR)
    with store.tx() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 2  # every attempt kept
        assert s.scalar(select(Pool.reserved_cpu)) == pytest.approx(0.0)


def test_liveness_counts_any_request_heard_from_the_agent(store: Store) -> None:
    """A request from a site's agent that arrived recently (its heartbeat not committed yet, or
    a report) keeps the site alive; one heard too long ago does not."""
    _, sites = _world(store, n_sites=2)
    t0 = time.time()
    heard = {sites[0]: t0 + 98.0, sites[1]: t0 + 10.0}
    with store.tx() as s:
        lost = registry.sweep_liveness(s, t0 + 100, 3, t0 - 1000, heard)
    assert lost == sites[1:]


def test_liveness_sweep_and_return(store: Store) -> None:
    _, sites = _world(store)
    t0 = time.time()
    with store.tx() as s:
        assert registry.sweep_liveness(s, t0 + 100, 3, t0 - 1000) == sites
        assert registry.list_pools(s, registry.PoolFilter()) == []
        assert registry.heartbeat(s, sites[0], Heartbeat(), t0 + 101)
        reg = Registration(
            pools=[PoolDescriptor(name="cpu", hardware={"cpu_cores": 4, "memory_gb": 64})]
        )
        registry.register(s, sites[0], reg, t0 + 101)
        assert len(registry.list_pools(s, registry.PoolFilter())) == 1


def test_reregistration_keeps_identifiers(store: Store) -> None:
    _, sites = _world(store)
    reg = Registration(
        pools=[PoolDescriptor(name="cpu", hardware={"cpu_cores": 4, "memory_gb": 64})]
    )
    with store.tx() as s:
        first = registry.register(s, sites[0], reg, time.time()).pools
    with store.tx() as s:
        second = registry.register(s, sites[0], reg, time.time()).pools
    assert first == second


def test_cancel_queued_and_running(store: Store) -> None:
    who, sites = _world(store, cores=1)
    with store.tx() as s:
        running, _ = ts.create_task(s, who, _spec(), time.time())
        queued, _ = ts.create_task(s, who, _spec(), time.time())
    schedule_once(store, time.time())
    with store.tx() as s:
        a = s.scalar(select(Attempt))
    _finish(store, sites[0], a.id, State.INITIALIZING, State.RUNNING)
    with store.tx() as s:
        t = s.scalar(select(Task).where(Task.id == queued.id))
        assert ts.cancel_task(s, t, time.time()) == []
        assert t.state == State.CANCELED.value
        r = s.scalar(select(Task).where(Task.id == running.id))
        assert ts.cancel_task(s, r, time.time()) == [sites[0]]
        assert r.state == State.CANCELING.value
        assert ts.cancels(s, sites[0]) == [a.id]
    _finish(store, sites[0], a.id, State.CANCELED)
    with store.tx() as s:
        assert s.scalar(select(Task.state).where(Task.id == running.id)) == "CANCELED"


def test_duplicate_site_name_with_other_type_conflicts(store: Store) -> None:
    _world(store)
    with store.tx() as s:
        prov = registry.list_providers(s, None)[0]
        with pytest.raises(Conflict):
            registry.create_site(
                s, prov, name="site0", type="edge", region=Region(code="1"), now=1.0
            )


def test_unplaceable_tasks_do_not_block_the_queue(store: Store) -> None:
    """Tasks no pool can take (a region nobody serves) must not starve the ones behind them."""
    who, _ = _world(store, cores=2)
    with store.tx() as s:
        for _ in range(7):
            ts.create_task(s, who, _spec(constraints={"regions": ["99"]}), time.time())
        fits, _ = ts.create_task(s, who, _spec(), time.time())
    result = schedule_once(store, time.time(), batch=3)
    assert result.placed == 1 and result.waiting == 7
    with store.tx() as s:
        assert s.scalar(select(Task.attempts).where(Task.id == fits.id)) == 1


def test_reads_do_not_wait_for_a_writer(store: Store) -> None:
    _world(store)
    with store.tx() as w:
        w.execute(Pool.__table__.update().values(queue_length=7))
        done = threading.Event()

        def reader() -> None:
            with store.read() as r:
                # The writer has not committed: a snapshot read sees the old value, at once.
                assert r.scalar(select(Pool.queue_length)) == 0
            done.set()

        t = threading.Thread(target=reader)
        t.start()
        assert done.wait(5), "a read waited for the open write transaction"
        t.join()


def test_a_write_inside_a_read_transaction_is_refused(store: Store) -> None:
    from cpnet.store.db import ReadOnlyViolation

    _world(store)
    with pytest.raises(ReadOnlyViolation), store.read() as r:
        r.execute(Pool.__table__.update().values(queue_length=7))


def test_placing_a_task_that_changed_meanwhile_gives_the_capacity_back(store: Store) -> None:
    who, sites = _world(store, cores=2)
    with store.tx() as s:
        t, _ = ts.create_task(s, who, _spec(), time.time())
        (stale,) = ts.queued_tasks(s, 10)
        ts.cancel_task(s, s.scalar(select(Task).where(Task.id == t.id)), time.time())
    demand = Resources(cpu_cores=1.0, ram_gb=0.5, disk_gb=0.0, gpus=0)
    with store.tx() as s:
        pool_id = s.scalar(select(Pool.id))
        assert ts.place(s, stale, pool_id, sites[0], demand, time.time(), "stale") is None
    with store.tx() as s:
        assert s.scalar(select(Pool.reserved_cpu)) == pytest.approx(0.0)
        assert s.scalar(select(func.count()).select_from(Attempt)) == 0
