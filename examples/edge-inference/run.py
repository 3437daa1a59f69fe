"""Cloud-edge manufacturing: an inspection model served at the edge within a latency bound.

One command builds a throw-away compute network with real processes: a hub (SQLite) on this
host, an edge site next to a factory in Dongguan and a cloud site in Shanghai, each agent in its
own network namespace; a "factory" namespace reaches the sites through relays that delay each
link (the kernel here has no ``netem``). It then

1. measures the factory's round trip to each site and declares those links to the hub;
2. submits the inspection service twice with a latency bound to the factory's place
   (``region:441900``): once failing closed, once with a fallback bound;
3. checks both are placed on the edge pool, and measures requests from the factory end to end;
4. kills the edge site (its agent and its task runners, SIGKILL) and checks what each policy
   does: the fail-closed task waits QUEUED and the factory's requests fail; the fallback task is
   re-placed on the cloud site, says so, and the factory measures the higher latency;
5. tears everything down (also on error or Ctrl-C).

Example::

    sudo .venv/bin/python examples/edge-inference/run.py            # tables
    sudo .venv/bin/python examples/edge-inference/run.py --json     # one JSON document

Needs root, ``ip`` and ``nsenter`` (Debian: iproute2, util-linux) and torch (the dev extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cpnet.client import Client, CpnetError  # noqa: E402
from cpnet.demo.network import LocalNetwork, free_port, kill_runners, log_tail  # noqa: E402
from cpnet.demo.relay import DelayProxy  # noqa: E402

FACTORY_PLACE = "region:441900"  # Dongguan, by its GB/T 2260 code
SITES = {
    # name: (region, pool type, cores, price per core-hour, relay delay each way in ms)
    "edge": ("441900", "edge", 2, 0.8, 2.0),
    "cloud": ("310115", "general", 16, 0.1, 25.0),
}
PROBE_PORT = 9300  # each agent's probe listener, inside its namespace
SERVICE_PORTS = {"closed": 8701, "fallback": 8702}  # each service task, inside its namespace
T = TypeVar("T")


class Failed(RuntimeError):
    """A check failed or a prerequisite is missing; the message says what to do."""


def problem() -> str:
    """What this machine lacks to run the example, or ""."""
    if os.geteuid() != 0:
        return "run it as root: it creates network namespaces and veth pairs"
    for tool, package in (("ip", "iproute2"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: apt-get install {package}"
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is missing (the service's model): pip install -e '.[dev]'"
    return ""


def sh(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0:
        raise Failed(f"`{' '.join(args)}` failed: {out.stderr.strip()}")


@dataclass
class Netns:
    """One namespace joined to the host by a veth pair in its own /30 (as in
    tests/integration/test_network_netns.py)."""

    ns: str
    host_if: str
    host_ip: str
    ns_ip: str
    made: bool = False

    def up(self) -> None:
        peer = self.host_if[:-1] + "n"
        sh("ip", "netns", "add", self.ns)
        self.made = True
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", peer)
        sh("ip", "-n", self.ns, "link", "set", peer, "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")

    def down(self) -> None:
        if not self.made:
            return
        for argv in (["ip", "link", "del", self.host_if], ["ip", "netns", "del", self.ns]):
            subprocess.run(argv, capture_output=True, timeout=30, check=False)

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}"]


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append((name, bool(ok), detail))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class Example:
    def __init__(self, work: Path, console: Console, requests: int) -> None:
        self.work, self.console, self.n = work, console, requests
        tag = f"{os.getpid() % 100000:05d}"
        third = random.randrange(0, 255)
        self.ns = {
            name: Netns(
                f"cpnet-{tag}-{name}",
                f"cpe{tag}{name[0]}h",
                f"10.214.{third}.{4 * i + 1}",
                f"10.214.{third}.{4 * i + 2}",
            )
            for i, name in enumerate(("factory", "edge", "cloud"))
        }
        self.net = LocalNetwork(work / "net", heartbeat_s=1.0, host="0.0.0.0")
        self.proxies: list[DelayProxy] = []
        # site name -> target port in its namespace -> URL the factory reaches it at
        self.urls: dict[str, dict[int, str]] = {}
        self.site_ids: dict[str, str] = {}
        self.agent_args: dict[str, dict[str, Any]] = {}
        self.user = ""
        self.report = Report()
        self.report.figures["namespaces"] = [ns.ns for ns in self.ns.values()]
        self.t0 = time.monotonic()

    # -- plumbing ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.log(text)

    def factory(self, *args: str, timeout: float = 120) -> dict:
        """Run factory.py inside the factory namespace; its JSON answer."""
        argv = [*self.ns["factory"].prefix, sys.executable, str(HERE / "factory.py"), *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise Failed(f"the factory client failed: {out.stderr.strip()[-1500:]}")
        return json.loads(out.stdout)

    def client(self) -> Client:
        return Client(self.net.url, self.user, timeout=10)

    # -- the network ---------------------------------------------------------------------------

    def build(self) -> None:
        for ns in self.ns.values():
            ns.up()
        admin = self.net.start_hub()
        with Client(self.net.url, admin) as c:
            org = c.create_org("acme-manufacturing")
            c.topup(org.id, "100000.00", transfer_id=f"funds-{org.id}")
            _, user = c.create_user(org.id, "line-engineer", role="user")
            _, padmin = c.create_user(org.id, "operator", role="provider-admin")
            self.user, self.admin = user.token, admin
        factory = self.ns["factory"]
        with Client(self.net.url, padmin.token) as c:
            provider = c.create_provider("acme compute")
            for name, (region, kind, cores, price, delay_ms) in SITES.items():
                site = c.create_site(provider.id, f"{name}-site", type=kind, region_code=region)
                self.site_ids[name] = site.id
                token = c.create_site_token(site.id).token
                ns = self.ns[name]
                pool = {
                    "name": f"{name}-pool",
                    "type": kind,
                    "hardware": {"cpu_cores": cores, "memory_gb": 16, "cpu_model": "shared"},
                    "price": {"cpu_core_hour": price},
                }
                self.agent_args[name] = {
                    "token": token,
                    "pools": [pool],
                    "extra": {
                        "hub": f"http://{ns.host_ip}:{self.net.url.rsplit(':', 1)[1]}",
                        "probe_listen": f"{ns.ns_ip}:{PROBE_PORT}",
                    },
                    "prefix": ns.prefix,
                }
                self.start_agent(name)
                # The factory's links: a relay on the factory's side of the host, per port.
                self.urls[name] = {}
                for port in (PROBE_PORT, *SERVICE_PORTS.values()):
                    proxy = DelayProxy(
                        factory.host_ip, free_port(), ns.ns_ip, port, delay_ms / 1000
                    ).start()
                    self.proxies.append(proxy)
                    self.urls[name][port] = f"http://{factory.host_ip}:{proxy.port}"

        def online() -> bool:
            self.net.check_alive()
            with Client(self.net.url, admin) as c:
                pools = c.pools()
            return sum(p.online for p in pools) == len(SITES)

        wait_for(online, 60, "both agents to join the hub")

    def start_agent(self, name: str) -> None:
        self.net.start_agent(name, **self.agent_args[name])

    def measure_links(self) -> None:
        """The factory's RTT to each site (to its agent's probe listener, through the relay),
        declared to the hub as the link between the factory's place and the site."""
        links = {}
        for name in SITES:
            got = self.factory("rtt", f"{self.urls[name][PROBE_PORT]}/v1/network/probe?bytes=0")
            if not got["ok"]:
                raise Failed(f"the factory cannot reach the {name} site: {got['error']}")
            links[name] = {
                "relay_delay_ms_each_way": SITES[name][4],
                "rtt_ms": round(got["median_ms"], 2),
                "rtt_min_ms": round(got["min_ms"], 2),
            }
            with Client(self.net.url, self.admin) as c:
                c.set_link(FACTORY_PLACE, f"site:{self.site_ids[name]}", rtt_ms=got["median_ms"])
        self.report.figures["links"] = links

    # -- the scenario ----------------------------------------------------------------------------

    def submit(self, bound: dict[str, Any]) -> dict[str, str]:
        with self.client() as c:
            script = c.put_blob((HERE / "service.py").read_bytes())
            ids = {}
            for policy, port in SERVICE_PORTS.items():
                latency = {"to": FACTORY_PLACE, "max_rtt_ms": bound["max_rtt_ms"]}
                if policy == "fallback":
                    latency["fallback_max_rtt_ms"] = bound["fallback_max_rtt_ms"]
                task = c.submit(
                    {
                        "name": f"inspection-{policy}",
                        "inputs": [{"url": script, "path": "service.py"}],
                        "executors": [
                            {"command": [sys.executable, "service.py", "--port", str(port)]}
                        ],
                        "resources": {"cpu_cores": 1, "ram_gb": 1},
                        "expected_runtime_s": 3600,
                        "constraints": {"latency": latency},
                    }
                )
                ids[policy] = task.id
        return ids

    def running_on(self, task_id: str) -> tuple[str, str] | None:
        """(site name, attempt id) of the task's running attempt, or None."""
        with self.client() as c:
            t = c.task(task_id)
        if t.state.value != "RUNNING" or not t.attempts:
            return None
        a = t.attempts[-1]
        name = next(n for n, sid in self.site_ids.items() if sid == a.site_id)
        return name, a.attempt_id

    def task_story(self, task_id: str) -> str:
        """The task's state, each attempt (site, state, reason) and why pools are rejected now:
        what a timeout needs to be understood afterwards."""
        try:
            with self.client() as c:
                t = c.task(task_id)
                ex = c.explain(task_id)
        except CpnetError as exc:
            return f"task {task_id}: the hub did not answer ({exc})"
        names = {sid: n for n, sid in self.site_ids.items()}
        lines = [f"task {task_id}: {t.state.value}"]
        for a in t.attempts:
            where = names.get(a.site_id, a.site_id)
            lines.append(f"  attempt {a.attempt_id} on {where}: {a.state.value} {a.reason or ''}")
        lines.append(f"  explain now: {json.dumps(ex, default=str)[:1500]}")
        return "\n".join(lines)

    def placement_reasons(self, task_id: str, site: str) -> list[str]:
        """The explain reasons of the placement on the site's pool."""
        with self.client() as c:
            ex = c.explain(task_id)
            pool_ids = {p.id for p in c.pools(online="any") if p.site_id == self.site_ids[site]}
        for p in ex.get("placements", []):
            if p["pool_id"] in pool_ids:
                return list(p["reasons"])
        return []

    def serve_and_measure(self, policy: str, site: str, wait_s: float) -> dict:
        url = self.urls[site][SERVICE_PORTS[policy]]
        up = self.factory("until-up", url, "--deadline", str(wait_s), timeout=wait_s + 30)
        if not up["up"]:
            raise Failed(f"the {policy} service on the {site} site never answered the factory")
        got = self.factory("infer", url, "--n", str(self.n))
        got["up_at"] = up["at"]
        got["model_accuracy"] = up["health"]["accuracy"]
        return got

    def run(self) -> Report:
        r = self.report
        with self.console.status("building the network: namespaces, hub, two agents"):
            self.build()
        self.say(f"hub {self.net.url}; sites {self.site_ids}")
        with self.console.status("measuring the factory's links"):
            self.measure_links()
        links = r.figures["links"]
        self.say(
            f"factory RTT: edge {links['edge']['rtt_ms']} ms, cloud {links['cloud']['rtt_ms']} ms"
        )
        # The bound sits between the two links; the fallback above the cloud's.
        bound = {
            "to": FACTORY_PLACE,
            "max_rtt_ms": 20.0,
            "fallback_max_rtt_ms": 150.0,
        }
        r.figures["bound"] = bound
        r.check(
            "links straddle the bound",
            links["edge"]["rtt_ms"] <= bound["max_rtt_ms"] < links["cloud"]["rtt_ms"],
            f"edge {links['edge']['rtt_ms']} ms ≤ {bound['max_rtt_ms']:g} ms < cloud "
            f"{links['cloud']['rtt_ms']} ms ≤ {bound['fallback_max_rtt_ms']:g} ms",
        )
        ids = self.submit(bound)
        r.figures["tasks"] = ids
        with self.console.status("waiting for both services to run (the model fits at start)"):
            placed = {
                p: wait_for(lambda t=t: self.running_on(t), 90, f"the {p} task to run")
                for p, t in ids.items()
            }
        for policy, (site, _) in placed.items():
            reasons = self.placement_reasons(ids[policy], site)
            said = next((x for x in reasons if x.startswith("latency")), "")
            r.check(
                f"{policy}: placed on the edge pool",
                site == "edge" and "within the 20 ms bound" in said,
                f"on {site}: {said or reasons}",
            )
        edge = {}
        with self.console.status(f"the factory sends {self.n} frames to each edge service"):
            for policy in SERVICE_PORTS:
                edge[policy] = self.serve_and_measure(policy, "edge", 90)
        r.figures["edge"] = {k: _latency(v) for k, v in edge.items()}
        for policy, got in edge.items():
            r.check(
                f"{policy}: factory served from the edge",
                got["ok"] == self.n,
                f"{got['ok']}/{self.n} answered, p50 {got.get('p50_ms', 0):.1f} ms, "
                f"p95 {got.get('p95_ms', 0):.1f} ms, accuracy {got.get('accuracy', 0):.2f}",
            )

        # -- the edge site fails ----------------------------------------------------------------
        agent = self.net.agents["edge"]
        t_fail = time.time()
        os.kill(agent.pid, signal.SIGKILL)
        agent.proc.wait(10)
        kill_runners(agent.work_dir)
        self.say("edge site killed: its agent and its task runners (SIGKILL)")

        def moved() -> tuple[str, str] | None:
            got = self.running_on(ids["fallback"])
            return got if got and got[0] != "edge" else None

        with self.console.status("fallback: waiting for the hub to re-place the service"):
            site, _ = wait_for(moved, 60, "the fallback task to run on another site")
            t_running = time.time()
            reasons = self.placement_reasons(ids["fallback"], site)
            said = next((x for x in reasons if x.startswith("latency")), "")
            r.check(
                "fallback: re-placed beyond the bound, and says so",
                site == "cloud" and "fallback, beyond the 20 ms bound" in said,
                f"on {site}: {said or reasons}",
            )
            after = self.serve_and_measure("fallback", site, 90)
        r.figures["fallback"] = _latency(after)
        r.figures["failover_s"] = {
            "to_running": round(t_running - t_fail, 2),
            "to_serving": round(after["up_at"] - t_fail, 2),
        }
        r.check(
            "fallback: factory served again, farther",
            after["ok"] == self.n and after["p50_ms"] > edge["fallback"]["p50_ms"],
            f"{after['ok']}/{self.n} answered from {site}, p50 {after.get('p50_ms', 0):.1f} ms "
            f"(edge {edge['fallback']['p50_ms']:.1f} ms), serving again "
            f"{after['up_at'] - t_fail:.1f} s after the failure",
        )

        # -- fail closed: still waiting, never served from beyond the bound ---------------------
        with self.client() as c:
            t = c.task(ids["closed"])
            ex = c.explain(ids["closed"])
        rejected = {x["pool_id"]: x["reasons"] for x in ex.get("rejections", [])}
        why = sorted({reason for reasons in rejected.values() for reason in reasons})
        running = [a for a in t.attempts if a.state.value == "RUNNING"]
        r.check(
            "closed: waits QUEUED, explain says why",
            t.state.value == "QUEUED"
            and not running
            and not ex.get("placements")
            and any("exceeds the bound 20 ms" in x for x in why),
            f"{t.state.value}; rejected: {'; '.join(why)}",
        )
        lost = self.factory("infer", self.urls["edge"][SERVICE_PORTS["closed"]], "--n", "5",
                            "--timeout", "1")  # fmt: skip
        r.check(
            "closed: the factory's requests fail",
            lost["ok"] == 0 and lost["failed"] == 5,
            f"{lost['failed']}/5 failed: {', '.join(lost['errors'])[:120]}",
        )
        r.figures["closed"] = {"state": t.state.value, "rejections": why, "factory": lost}

        # -- the edge site comes back: the fail-closed task returns to it -----------------------
        t_back = time.time()
        self.start_agent("edge")
        self.say("edge site restarted (its agent; the site's pool comes back online)")
        with self.console.status("fail closed: waiting for the service to return to the edge"):
            try:
                site, _ = wait_for(
                    lambda: self.running_on(ids["closed"]), 120, "the closed task to run again"
                )
            except Failed as exc:
                raise Failed(f"{exc}\n{self.task_story(ids['closed'])}") from None
            back = self.serve_and_measure("closed", site, 90)
        still = self.running_on(ids["fallback"])
        r.figures["closed"]["back"] = _latency(back)
        r.figures["closed"]["restart_to_serving_s"] = round(back["up_at"] - t_back, 2)
        r.check(
            "closed: back at the edge once it returns",
            site == "edge" and back["ok"] == self.n,
            f"on {site}: {back['ok']}/{self.n} answered, p50 {back.get('p50_ms', 0):.1f} ms, "
            f"serving {back['up_at'] - t_back:.1f} s after the edge agent restarted "
            f"(fallback task stays on {still[0] if still else 'nothing'})",
        )
        with self.client() as c:
            for task_id in ids.values():
                with contextlib.suppress(CpnetError):
                    c.cancel(task_id)
        return r

    def teardown(self) -> None:
        self.net.stop()
        for proxy in self.proxies:
            proxy.stop()
        for ns in self.ns.values():
            ns.down()


def _latency(got: dict) -> dict:
    return {
        k: round(got[k], 2) if isinstance(got.get(k), float) else got.get(k)
        for k in ("sent", "ok", "p50_ms", "p95_ms", "max_ms", "accuracy", "model_accuracy")
    }


def show(console: Console, r: Report) -> None:
    table = Table(title="edge inference: what was checked")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("detail", overflow="fold")
    for name, ok, detail in r.checks:
        table.add_row(name, "[green]yes[/]" if ok else "[red]NO[/]", detail)
    console.print(table)
    f = r.figures
    if "fallback" in f:
        t = Table(title="figures (ms, measured from the factory namespace)")
        for col in ("path", "link RTT", "request p50", "request p95", "accuracy"):
            t.add_column(col)
        links = f["links"]
        for name, site in (("edge", "edge"), ("fallback", "cloud")):
            got = f["edge"]["fallback"] if name == "edge" else f["fallback"]
            t.add_row(
                f"factory → {site}",
                f"{links[site]['rtt_ms']}",
                f"{got['p50_ms']}",
                f"{got['p95_ms']}",
                f"{got['accuracy']}",
            )
        console.print(t)
        fo = f["failover_s"]
        console.print(
            f"failure → fallback running {fo['to_running']} s, → serving the factory "
            f"{fo['to_serving']} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: sudo .venv/bin/python examples/edge-inference/run.py --json",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--work-dir", type=Path, help="keep the network's files here")
    parser.add_argument("--requests", type=int, default=60, help="frames per measurement")
    args = parser.parse_args()
    console = Console(stderr=True) if args.json else Console()
    missing = problem()
    if missing:
        console.print(f"[red]cannot run:[/] {missing}")
        if args.json:
            print(json.dumps({"ok": False, "error": missing}))
        return 2

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    made = None if args.work_dir else tempfile.mkdtemp(prefix="cpnet-edge-")
    work = Path(args.work_dir or made).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ex = Example(work, console, args.requests)
    error = ""
    try:
        ex.run()
    except (Failed, CpnetError, OSError, subprocess.SubprocessError) as e:
        error = f"{type(e).__name__}: {e}"
        for name, member in ex.net.agents.items():
            error += f"\n--- {name} agent log:\n{log_tail(member.log, 800)}"
        if ex.net.hub is not None:
            error += f"\n--- hub log:\n{log_tail(ex.net.hub.log, 1500)}"
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        with console.status("tearing down"):
            ex.teardown()
        if made:
            shutil.rmtree(made, ignore_errors=True)
    r = ex.report
    r.figures["wall_s"] = round(time.monotonic() - ex.t0, 1)
    ok = r.ok and not error
    if args.json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "error": error,
                    "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in r.checks],
                    **r.figures,
                },
                indent=1,
            )
        )
    else:
        show(console, r)
    if not ok:
        console.print(
            f"[red]failed[/]: {error or 'a check did not pass (see the table)'}\n"
            "next: rerun with --work-dir DIR to keep the hub's and agents' logs under DIR/net"
        )
        return 1
    console.print(f"[green]all {len(r.checks)} checks passed[/] in {r.figures['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
