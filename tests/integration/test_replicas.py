"""Several hub replicas on one PostgreSQL behind a real load balancer (HAProxy).

- A burst of submissions through the balancer while the leading replica is SIGKILLed: every
  acknowledged task completes exactly once, and the survivor takes over the leader's loops.
- A long poll on one replica is woken by a placement made on another (LISTEN/NOTIFY), also
  after its listener's connection was cut.
- Leadership fails over when the leader dies or loses its database session, and never two
  replicas lead at once.
- `cpnet hub --workers 2` serves from two processes on one port, restarts a killed one, and
  refuses SQLite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from cpnet.client import Client, CpnetError
from cpnet.hub.leader import LEADER_KEY
from cpnet.tasks.states import State
from services import free_port, libpq_url, need_service
from tests.integration.balancer import Balancer, haproxy_problem
from tests.integration.procs import AgentProc, HubProc, _env, make_world, pool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

# Checkpoints every second, so a test sees which replica signs them.
ENV = {"CPNET_AUDIT_CHECKPOINT_S": "1"}


def health(hub: HubProc) -> dict | None:
    """A replica's /v1/health, straight (not through the balancer); None if it does not answer."""
    try:
        r = httpx.get(f"{hub.url}/v1/health", timeout=5)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


@dataclass
class Replicas:
    hubs: list[HubProc]
    lb: Balancer
    front: HubProc  # the balancer's address, as tests and agents use a hub (no process)
    database_url: str

    def leaders(self) -> list[HubProc]:
        return [h for h in self.hubs if (health(h) or {}).get("leader")]

    def leader(self, timeout: float = 60) -> HubProc:
        """The one replica that leads, once exactly one says it does."""
        found = wait_until(
            lambda: (lambda got: got if len(got) == 1 else None)(self.leaders()),
            timeout,
            "exactly one leading replica",
        )
        return found[0]

    def other(self, hub: HubProc) -> HubProc:
        return next(h for h in self.hubs if h is not hub)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str):
    problem = haproxy_problem()
    if problem:
        need_service("haproxy", problem)
    data = tmp_path / "hub"  # one data dir: the replicas share its secrets key (blobs, secrets)
    first = HubProc(data, free_port(), database_url=postgres_url, env=ENV)
    first.init()
    second = HubProc(
        data, free_port(), database_url=postgres_url, admin_token=first.admin_token, env=ENV
    )
    hubs = [first, second]
    lb = Balancer(tmp_path / "lb", free_port(), [h.port for h in hubs])
    try:
        for h in hubs:
            h.start()
        lb.start()
        front = HubProc(data, lb.port, admin_token=first.admin_token)
        yield Replicas(hubs, lb, front, postgres_url)
    finally:
        lb.stop()
        for h in hubs:
            h.kill()


def _spec(ledger: Path, key: str) -> dict:
    return {
        "executors": [{"command": ["sh", "-c", f'echo "$CPNET_TASK_ID" >> {ledger}']}],
        "resources": {"cpu_cores": 0.5},
        "idempotency_key": key,
    }


def test_sigkill_leader_mid_burst_every_acknowledged_task_completes_once(
    replicas: Replicas, agents, tmp_path: Path
):
    r = replicas
    world = make_world(r.front, {"a": ("general", "440100")})
    agent = AgentProc(r.front, world.site_tokens["a"], tmp_path / "agent", [pool("cpu", cores=4)])
    agent.start()
    agents.append(agent)
    with r.front.client(world.user_token) as user:
        wait_until(lambda: user.pools(), 60, "the agent's pool online through the balancer")
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    acked: dict[str, str] = {}  # idempotency key -> the task the hub acknowledged
    sent: list[str] = []
    refused: list[str] = []  # submissions that failed after the client's retries
    lock = threading.Lock()
    stop = threading.Event()

    def singles() -> None:  # POST /v1/tasks, one at a time
        with Client(r.front.url, world.user_token, retry_window_s=60) as c:
            while not stop.is_set():
                key = uuid.uuid4().hex
                with lock:
                    sent.append(key)
                try:
                    view = c.submit(_spec(ledger, key))
                except CpnetError as exc:
                    with lock:
                        refused.append(f"{key}: {exc}")
                    continue
                with lock:
                    acked[key] = view.id

    def batches() -> None:  # POST /v1/tasks:batch, ten at a time
        with Client(r.front.url, world.user_token, retry_window_s=60) as c:
            while not stop.is_set():
                keys = [uuid.uuid4().hex for _ in range(10)]
                with lock:
                    sent.extend(keys)
                try:
                    items = c.submit_many([_spec(ledger, k) for k in keys])
                except CpnetError as exc:
                    with lock:
                        refused.append(f"batch {keys[0]}…: {exc}")
                    continue
                with lock:
                    for item in items:
                        if item.status in (200, 201):
                            acked[keys[item.index]] = item.id
                        else:
                            refused.append(f"{keys[item.index]}: {item}")

    leader = r.leader()
    survivor = r.other(leader)
    threads = [threading.Thread(target=f) for f in (singles, singles, batches)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 40, 120, "40 acknowledged submissions")
        leader.kill()  # SIGKILL, mid-burst: the leader's loops must move to the survivor
        killed_at = time.time()
        at_kill = len(acked)
        # The burst goes on through the balancer, now served by the survivor alone.
        wait_until(lambda: len(acked) >= at_kill + 40, 120, "40 more acknowledgements")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not refused, refused[:5]  # the client retried what the dead replica dropped

    # It takes the lead within its next try of the lock (about a second); the burst may end
    # sooner than that now that submissions are cheap.
    wait_until(lambda: (health(survivor) or {}).get("leader") is True, 60, "the survivor to lead")
    with r.front.client(world.user_token) as c:
        for task_id in acked.values():
            final = c.wait(task_id, timeout=180)
            assert final.state is State.COMPLETE, (task_id, final.state, final.reason)
            attempts = c.task(task_id, full=True).attempts
            assert [a.state for a in attempts].count(State.COMPLETE) == 1, attempts
        # Any submission sent again with its key finds its task: no duplicate, ever.
        for key in sent:
            again = c.submit(_spec(ledger, key))
            if key in acked:
                assert again.id == acked[key]
        everything = list(c.iter_tasks())
        assert len(everything) == len(set(sent))
        for t in everything:
            assert c.wait(t.id, timeout=180).state is State.COMPLETE
    runs = Counter(ledger.read_text().split())
    assert runs and max(runs.values()) == 1, runs.most_common(3)  # no task ran twice
    assert set(acked.values()) <= set(runs)

    # The chain that both replicas appended to at once is whole, and the survivor signs it.
    with r.front.client() as admin:
        verdict = admin.audit_verify()
    assert verdict.ok, verdict.problems[:3]
    with psycopg.connect(libpq_url(r.database_url)) as conn:
        (last,) = conn.execute("SELECT max(at) FROM audit_checkpoints").fetchone()
    assert last is not None and last > killed_at, "no checkpoint signed since the leader died"


def _socket_owner(hubs: list[HubProc], port: int) -> HubProc | None:
    """The replica process holding the TCP socket whose local port is `port` (its end of a
    database connection), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for hub in hubs:
        if hub.proc is None or hub.proc.poll() is not None:
            continue
        fds = Path(f"/proc/{hub.proc.pid}/fd")
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return hub
    return None


def test_a_batch_cut_off_by_a_replica_dying_is_sent_again_and_made_once(replicas: Replicas):
    """The SIGKILL lands while a batch's transaction is under way on a replica (found from the
    database's side): the transaction rolls back, HAProxy answers the POST 502, the SDK sends
    it again with the same idempotency keys, the other replica makes every task once."""
    r = replicas
    world = make_world(r.front, {})
    # A monthly spending limit (far above what this spends) sends the batch the item-by-item
    # way (each hold checked against it), whose transaction lasts seconds: long enough to be
    # caught under way. A plain batch is written with a few statements and is over too soon.
    with r.front.client() as admin:
        admin.set_limits(world.org_id, monthly="100000000")
    n = 1000
    specs = [
        {"executors": [{"command": ["true"]}], "idempotency_key": f"cut-{i}"} for i in range(n)
    ]
    got: dict = {}

    def send() -> None:
        with Client(r.front.url, world.user_token, retry_window_s=120, timeout=300) as c:
            try:
                got["items"] = c.submit_many(specs, chunk_size=n)
            except CpnetError as exc:
                got["error"] = exc

    t = threading.Thread(target=send)
    t.start()

    def busy() -> HubProc | None:
        """The replica whose database session is inside a transaction older than a second
        (the batch's: every other transaction of an idle hub is far shorter)."""
        with psycopg.connect(libpq_url(r.database_url)) as conn:
            ports = conn.execute(
                "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND xact_start < now() - interval '1 second' AND state <> 'idle'"
            ).fetchall()
        for (port,) in ports:
            owner = _socket_owner(r.hubs, port)
            if owner is not None:
                return owner
        return None

    victim = wait_until(busy, 120, "the batch's transaction under way on a replica")
    victim.kill()
    t.join(timeout=400)
    assert not t.is_alive()
    assert "error" not in got, got.get("error")
    items = got["items"]
    assert len(items) == n and all(i.status in (200, 201) for i in items), items[:3]
    assert len({i.id for i in items}) == n
    with psycopg.connect(libpq_url(r.database_url)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
    assert count == n
    # It went as described: the balancer answered the cut-off batch 502, the SDK sent it again.
    assert r.lb.log is not None
    log = r.lb.log.read_text()
    assert any(" 502 " in ln and "POST /v1/tasks:batch" in ln for ln in log.splitlines()), log


def test_long_poll_on_one_replica_is_woken_by_a_placement_on_another(replicas: Replicas):
    r = replicas
    leader = r.leader()
    follower = r.other(leader)
    world = make_world(leader, {"a": ("general", "440100")})
    site, token = world.site_ids["a"], world.site_tokens["a"]
    auth = {"authorization": f"Bearer {token}"}
    # An agent by hand: its pool registered on the leader (a long heartbeat interval keeps the
    # site online with no heartbeats), its long poll held open on the follower.
    reg = httpx.post(
        f"{leader.url}/v1/sites/{site}/register",
        json={"heartbeat_interval_s": 3600, "pools": [pool("cpu", cores=4)]},
        headers=auth,
        timeout=30,
    )
    assert reg.status_code == 200, reg.text
    wait_s = 60.0  # the longest a hub holds a long poll: waking it early is the point

    def poll_and_place(n: int) -> tuple[float, list[dict]]:
        """Start a long poll on the follower, submit a task to the leader (which places it);
        how long the poll took and what it got."""
        got: dict = {}

        def poll() -> None:
            t0 = time.monotonic()
            resp = httpx.get(
                f"{follower.url}/v1/sites/{site}/assignments",
                params={"wait": wait_s},
                headers=auth,
                timeout=wait_s + 30,
            )
            got["elapsed"], got["body"] = time.monotonic() - t0, resp.json()

        t = threading.Thread(target=poll)
        t.start()
        # A head start for the poll to reach its wait on the follower. Were it slower than this,
        # its first read would find the placement and the test would pass without proving the
        # wake-up (it could not fail for it): no condition here says when a poll is waiting.
        time.sleep(1.0)
        with leader.client(world.user_token) as user:
            task = user.submit({"executors": [{"command": ["true"]}], "name": f"t{n}"})
        t.join(timeout=wait_s + 60)
        assert not t.is_alive()
        ids = [a["task_id"] for a in got["body"]["assignments"]]
        assert task.id in ids, got["body"]
        return got["elapsed"], got["body"]["assignments"]

    elapsed, _ = poll_and_place(1)
    # Woken, not timed out: without the notification the poll would have waited out wait_s.
    assert elapsed < wait_s - 15, elapsed

    # Cut the follower's listener's connection (as a network fault would): it reconnects,
    # LISTENs again, and the next placement still wakes its long polls.
    with psycopg.connect(libpq_url(r.database_url), autocommit=True) as conn:
        cut = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN cpnet_wake%%' AND datname = current_database()"
        ).fetchall()
    assert len(cut) == 2, cut  # one listener per replica
    wait_until(lambda: _listeners(r.database_url) == 2, 60, "both listeners back")
    elapsed, _ = poll_and_place(2)
    assert elapsed < wait_s - 15, elapsed


def _listeners(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN cpnet_wake%%' AND datname = current_database()"
        ).fetchone()
    return n


def _lock_holder(url: str) -> int | None:
    """The backend pid holding the leader lock, if any."""
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            ((LEADER_KEY >> 32) & 0xFFFFFFFF, LEADER_KEY & 0xFFFFFFFF),
        ).fetchone()
    return row[0] if row else None


def test_leadership_fails_over(replicas: Replicas):
    r = replicas
    first = r.leader()
    second = r.other(first)
    assert (health(second) or {}).get("leader") is False

    # 1. The leader loses its lock's session (the database cut it off, as a network fault or
    #    an operator would): it steps down, the other replica takes over.
    holder = _lock_holder(r.database_url)
    assert holder is not None
    with psycopg.connect(libpq_url(r.database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
    wait_until(lambda: _lock_holder(r.database_url) not in (None, holder), 60, "a new lock holder")
    # Whoever took it (the old leader may win it back on a new session), exactly one leads.
    now_leader = r.leader()

    # 2. The leader is SIGKILLed: the survivor leads.
    now_leader.kill()
    survivor = r.other(now_leader)
    wait_until(lambda: (health(survivor) or {}).get("leader"), 60, "the survivor to lead")

    # 3. The dead one comes back: it follows; the survivor keeps leading.
    now_leader.start()
    assert r.leader() is survivor
    assert (health(now_leader) or {}).get("leader") is False


def test_workers_serve_one_port_and_replace_a_killed_one(tmp_path: Path, postgres_url: str):
    hub = HubProc(tmp_path / "hub", free_port(), database_url=postgres_url, args=["--workers", "2"])
    hub.init()
    hub.start()
    try:

        def replicas() -> dict[int, bool]:
            """pid -> leads?, of whoever answers 20 health checks sent at once on new
            connections (the replicas take them from their shared accept queue)."""
            got: list[dict | None] = []
            threads = [threading.Thread(target=lambda: got.append(health(hub))) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {int(g["replica"].rsplit(":", 1)[1]): g["leader"] for g in got if g}

        def two_one_leading(without: int | None = None):  # type: ignore[no-untyped-def]
            seen = replicas()
            ok = len(seen) == 2 and sorted(seen.values()) == [False, True]
            return seen if ok and without not in seen else None

        before = wait_until(two_one_leading, 90, "two replicas, one leading")
        victim = next(pid for pid, leads in before.items() if leads)
        os.kill(victim, signal.SIGKILL)
        # The port keeps answering, the other replica leads, and a new one replaces the dead.
        after = wait_until(
            lambda: two_one_leading(without=victim), 90, "two replicas again, one leading"
        )
        assert len(set(after) - set(before)) == 1
    finally:
        hub.kill()


def test_workers_refuse_sqlite(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "cpnet", "hub", "--data-dir", str(tmp_path), "--workers", "2"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 1
    assert "needs PostgreSQL" in out.stderr and "--database-url" in out.stderr, out.stderr
