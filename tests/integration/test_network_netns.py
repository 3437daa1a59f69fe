"""Two sites behind real, shaped links: each agent runs in its own network namespace, joined to
the host (where the hub listens) by a veth pair; site A's link is shaped with ``tc tbf`` to
8 Mbit/s and reaches the hub through a relay that delays each chunk 25 ms each way
(cpnet/demo/relay.py: the kernel has no netem), site B's is neither (ENGINES.md: "Several hosts and
a real network on one machine").

The agents' own probes must put the shaped figures on the map, and the scheduler must send a
task with a large input to the site that *finishes* first (B), not to the one with the most free
capacity (A). Needs root, ``ip``, ``tc`` and ``nsenter`` (CI runs it as root); skipped otherwise.
Namespaces, links and qdiscs are removed at the end even when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cpnet.client import CpnetError
from cpnet.demo.relay import DelayProxy
from services import free_port
from tests.integration.procs import (
    AgentProc,
    HubProc,
    World,
    kill_runners,
    make_world,
    pool,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.netns]

SHAPED_MBIT = 8  # site A's link (host → A: downloads from the hub)
DELAY_MS = 25  # each way, on site A's path to the hub (a userspace relay: no netem here)
BLOB_BYTES = 24 * 1024 * 1024  # the large input: ~25 s to A at 8 Mbit/s, well under 1 s to B
PROBE_BYTES = 2_000_000


def _problem() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    for tool in ("ip", "tc", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


def sh(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Site:
    """One namespace joined to the host by a veth pair in its own /30."""

    ns: str
    host_if: str
    host_ip: str
    ns_ip: str

    def up(self) -> None:
        peer = self.host_if[:-1] + "n"
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", peer)
        sh("ip", "-n", self.ns, "link", "set", peer, "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")

    def shape(self, mbit: int) -> None:
        """Limit what the host sends into the namespace (the site's downloads)."""
        sh(
            *("tc", "qdisc", "add", "dev", self.host_if, "root", "tbf"),
            *("rate", f"{mbit}mbit", "burst", "32kbit", "latency", "400ms"),
        )

    def down(self) -> None:
        # Deleting the host end deletes the pair and its qdisc; then the namespace.
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}"]


@dataclass
class Net:
    hub: HubProc
    world: World
    a: str  # site ids
    b: str


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    problem = _problem()
    if problem:
        pytest.skip(problem)
    tag = f"{os.getpid() % 100000:05d}"
    third = random.randrange(0, 250, 2)  # two /30s in 10.213.<third>.0/24 and the next /24
    a = Site(f"cpnet-{tag}-a", f"cpa{tag}h", f"10.213.{third}.1", f"10.213.{third}.2")
    b = Site(f"cpnet-{tag}-b", f"cpb{tag}h", f"10.213.{third + 1}.1", f"10.213.{third + 1}.2")
    root = tmp_path_factory.mktemp("netns")
    hub = HubProc(
        root / "hub",
        free_port(),
        args=["--host", "0.0.0.0"],
        env={"CPNET_MAX_BLOB_BYTES": str(64 * 1024 * 1024)},
    )
    started: list[AgentProc] = []
    proxy: DelayProxy | None = None
    try:
        for s in (a, b):
            s.up()
        a.shape(SHAPED_MBIT)
        hub.data_dir.mkdir()
        hub.init()
        hub.start()
        world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "440100")})
        proxy = DelayProxy(a.host_ip, free_port(), "127.0.0.1", hub.port, DELAY_MS / 1000)
        proxy.start()
        urls = {"a": f"http://{a.host_ip}:{proxy.port}", "b": f"http://{b.host_ip}:{hub.port}"}
        # A has more free capacity (8 cores against 2); only its link is slow.
        for name, site, cores in (("a", a, 8), ("b", b, 2)):
            agent = AgentProc(
                hub,
                world.site_tokens[name],
                root / f"agent-{name}",
                pools=[pool("cpu", cores=cores, memory_gb=16)],
                prefix=site.prefix,
                config={
                    "hub": urls[name],
                    "network_probe_interval_s": 5,
                    "network_probe_bytes": PROBE_BYTES,
                },
            )
            agent.start()
            started.append(agent)
        yield Net(hub, world, world.site_ids["a"], world.site_ids["b"])
    finally:
        for agent in started:
            agent.kill()
            kill_runners(agent.work_dir)
        hub.kill()
        if proxy is not None:
            proxy.stop()
        for s in (a, b):
            s.down()


def _measured(net: Net, site_id: str) -> dict | None:
    with net.hub.client(net.world.user_token) as c:
        m = c.network()
    for p in m.paths:
        if {p.a, p.b} == {"hub", f"site:{site_id}"} and p.mbps_source == "measured":
            return p.model_dump()
    return None


def test_the_measured_map_shows_the_shaped_link(net: Net) -> None:
    pa = wait_until(lambda: _measured(net, net.a), 45, "site A's measured hub link", every=0.5)
    pb = wait_until(lambda: _measured(net, net.b), 45, "site B's measured hub link", every=0.5)
    # tbf counts IP bytes; the probe counts payload (headers take a few per cent).
    assert 0.6 * SHAPED_MBIT <= pa["mbps"] <= 1.1 * SHAPED_MBIT, pa
    assert pb["mbps"] >= 10 * SHAPED_MBIT, pb
    assert pa["rtt_source"] == pb["rtt_source"] == "measured"
    # A's round trip is the relay's 2 × 25 ms plus a small HTTP request's own time (2-15 ms on
    # a 2-core VM, more when loaded); B's is that time alone.
    assert 2 * DELAY_MS <= pa["rtt_ms"] <= 2 * DELAY_MS + 100, pa
    assert pb["rtt_ms"] < 2 * DELAY_MS, pb
    with net.hub.client(net.world.user_token) as c:
        slow = c.estimate_transfer("hub", f"site:{net.a}", BLOB_BYTES)
        fast = c.estimate_transfer("hub", f"site:{net.b}", BLOB_BYTES)
    assert slow.path.source == fast.path.source == "measured"
    assert slow.seconds > 10 * fast.seconds
    print(
        f"\nmeasured: A {pa['mbps']:.2f} Mbit/s {pa['rtt_ms']:.2f} ms; "
        f"B {pb['mbps']:.1f} Mbit/s {pb['rtt_ms']:.2f} ms; "
        f"24 MiB: A {slow.seconds:.1f} s, B {fast.seconds:.2f} s"
    )


def test_the_scheduler_picks_the_site_that_finishes_first(net: Net) -> None:
    # Both links measured first, so the map has something to go on.
    wait_until(lambda: _measured(net, net.a), 45, "site A's measured hub link", every=0.5)
    wait_until(lambda: _measured(net, net.b), 45, "site B's measured hub link", every=0.5)
    data = random.randbytes(BLOB_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    with net.hub.client(net.world.user_token) as c:
        assert c.put_blob(data).endswith(sha)
        task = c.submit(
            {
                "executors": [{"command": ["true"]}],
                "inputs": [{"url": f"cpnet://blobs/{sha}", "path": "/data/big.bin"}],
                "resources": {"cpu_cores": 1, "ram_gb": 1},
            }
        )

        def placed() -> str | None:
            t = c.task(task.id)
            return t.attempts[-1].site_id if t.attempts else None

        try:
            site = wait_until(placed, 30, "the task to be placed", every=0.2)
            assert site == net.b, f"placed on {site} (A: {net.a}, B: {net.b})"
            t0 = time.monotonic()
            done = c.wait(task.id, timeout=60)
            assert done.state.value == "COMPLETE", done
            print(f"\nplaced on B, finished in {time.monotonic() - t0:.1f} s")
        finally:
            with contextlib.suppress(CpnetError):
                c.cancel(task.id)  # an ended task stays as it is
