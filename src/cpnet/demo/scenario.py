"""`cpnet demo`: a hub, three providers' sites and a mixed workload, run end to end here.

The demo talks to its hub only through the SDK, as any user, provider or operator would: the
admin creates the tenants, each provider admin its provider, site and agent token, and the user
submits the tasks, follows them and reads the scheduler's explanations.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from cpnet.client import Client, CpnetError
from cpnet.demo import market, view
from cpnet.demo.network import LocalNetwork, NetworkError
from cpnet.demo.sites import SITES, DemoSite
from cpnet.demo.workload import Context, DemoTask, build
from cpnet.market import money
from cpnet.registry.model import PoolRecord
from cpnet.tasks.model import TaskView
from cpnet.tasks.states import State

HEARTBEAT_S = 1.0  # agents report every second, so pools appear and tasks move promptly
POOLS_TIMEOUT_S = 60.0
TASKS_TIMEOUT_S = 90.0  # the whole demo must end within two minutes on a small machine
EXTRA_S_PER_TASK = 1.0  # more time for a larger --tasks, beyond the first LARGE tasks
POLL_S = 0.25
LARGE = 20  # beyond this many tasks the demo polls less often
TAG = "cpnet-demo"
AGENT_OPTIONS = {"cancel_grace_s": "3"}  # a cancelled task's runner gets SIGKILL after 3 s
USER_ORG = "Aurora Research"
EXPLAINED = ("train-a800", "matmul")  # whose placements the summary explains


DEMO_FUNDS = "1000000.00"  # CNY the demo's user organisation starts with


class DemoError(Exception):
    """The demo cannot go on, with what to do about it."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the demo runs, so its processes are stopped either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _data_root(data_dir: Path | None) -> tuple[Path, bool]:
    """The directory for this run and whether the demo created it as a temporary one."""
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="cpnet-demo-")), True
    root = data_dir.expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DemoError(
            f"--data-dir {root} is not an empty directory; give a new or empty one "
            "(the demo creates a fresh hub store, agent configs and logs there)"
        )
    root.mkdir(parents=True, exist_ok=True)
    return root, False


class Demo:
    """One run of the demo: its network, its accounts, its tasks and what became of them."""

    def __init__(self, console: Console, net: LocalNetwork, n_tasks: int) -> None:
        self.console = console
        self.net = net
        self.n_tasks = n_tasks
        self.run_id = uuid.uuid4().hex[:12]
        self.admin_token = ""
        self.user_token = ""
        self.pools: list[PoolRecord] = []
        self.labels: dict[str, str] = {}  # pool id -> "site/pool"
        self.site_of: dict[str, str] = {}  # pool id -> site key
        self.tasks: list[DemoTask] = []
        self.views: dict[str, TaskView] = {}
        self.padmin_tokens: dict[str, str] = {}  # site key -> its provider admin's token
        self.user_org = ""
        self.quote_ids: dict[str, str] = {}  # task name -> the quote it is submitted with
        self.lease_id: str | None = None  # the reservation alice won by auction

    def say(self, message: str, style: str = "") -> None:
        self.console.print(Text(message, style=style), soft_wrap=True)

    def step(self, title: str) -> None:
        self.console.print()
        self.console.rule(Text(title, style="bold"), align="left")

    def user(self) -> Client:
        return Client(self.net.url, self.user_token)

    # -- 1. the hub ----------------------------------------------------------------------------

    def start_hub(self) -> None:
        self.step("1. Hub")
        with self.console.status("starting the hub (store, signing key, admin token)…"):
            self.admin_token = self.net.start_hub()
        hub = self.net.hub
        assert hub is not None
        self.say(
            f"hub {self.net.url} (pid {hub.pid}) on a fresh SQLite store in {self.net.hub_dir}; "
            f"log {hub.log}"
        )

    # -- 2. tenants, providers, sites, agents --------------------------------------------------

    def create_sites(self) -> dict[str, str]:
        """Create the user's and each provider's organisation; return site key -> agent token."""
        self.step("2. Providers, sites and agents")
        tokens: dict[str, str] = {}
        with Client(self.net.url, self.admin_token) as admin:
            org = admin.create_org(USER_ORG)
            self.user_org = org.id
            # Generous funds: every task's hold is placed at submission (docs/market.md).
            admin.topup(org.id, DEMO_FUNDS, transfer_id=f"demo-funds-{org.id}")
            _, user = admin.create_user(org.id, "alice", role="user")
            self.user_token = user.token
            for site in SITES:
                porg = admin.create_org(site.provider)
                _, padmin = admin.create_user(porg.id, f"{site.key}-admin", role="provider-admin")
                self.padmin_tokens[site.key] = padmin.token
                with Client(self.net.url, padmin.token) as operator:
                    tokens[site.key] = self._create_site(operator, site)
        self.say(
            f"organisations: {USER_ORG} (user alice) and one per provider, each with its own "
            "provider admin, who created the provider, its site and the site's agent token:"
        )
        self.console.print(view.sites_table(SITES))
        return tokens

    def _create_site(self, operator: Client, site: DemoSite) -> str:
        provider = operator.create_provider(site.provider)
        record = operator.create_site(
            provider.id,
            site.site,
            type=site.type,
            region_code=site.region_code,
            region_name=site.region_name,
            lat=site.lat,
            lon=site.lon,
        )
        return operator.create_site_token(record.id, f"demo agent of {site.site}").token

    def start_agents(self, tokens: dict[str, str]) -> None:
        for site in SITES:
            agent = self.net.start_agent(site.key, tokens[site.key], [site.pool], AGENT_OPTIONS)
            config = self.net.site_dir(site.key) / "agent.toml"
            self.say(f"agent {site.key} (pid {agent.pid}): cpnet agent --config {config}")

    # -- 3. discovery --------------------------------------------------------------------------

    def discover(self) -> None:
        self.step("3. Live pools (discovery)")
        deadline = time.monotonic() + POOLS_TIMEOUT_S
        with self.user() as user, self.console.status("waiting for the agents' pools…"):
            while True:
                self.net.check_alive()
                pools = user.pools()
                if len(pools) >= len(SITES):
                    break
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"only {len(pools)} of {len(SITES)} pools came online within "
                        f"{POOLS_TIMEOUT_S:g}s; see the agent logs in {self.net.root}/sites/"
                    )
                time.sleep(0.2)
        by_site = {s.site: s for s in SITES}
        order = {s.key: i for i, s in enumerate(SITES)}
        for p in pools:
            site = by_site.get(p.site_name)
            key = site.key if site else p.site_name
            self.labels[p.id] = f"{key}/{p.name}"
            self.site_of[p.id] = key
        self.pools = sorted(pools, key=lambda p: order.get(self.site_of[p.id], 99))
        self.console.print(view.pools_table(self.pools, self.labels))
        self.console.print(view.declared_note(os.cpu_count() or 1))

    # -- 4. the market: price books and a binding quote -----------------------------------------

    def _spec(self, t: DemoTask) -> dict:
        spec = dict(t.spec)
        spec["tags"] = {**spec.get("tags", {}), TAG: self.run_id}
        return spec

    def price_and_quote(self) -> None:
        """The providers publish their price books; alice asks a binding quote for one task."""
        self.step("4. Market: price books, a binding quote, a reservation by auction")
        outputs = self.net.root / "outputs"
        outputs.mkdir(parents=True, exist_ok=True)
        self.tasks = build(self.n_tasks, Context(python=self.net.python, outputs=outputs))
        pools = {self.site_of[p.id]: p.id for p in self.pools}
        for line in market.publish(self.net.url, self.padmin_tokens, pools):
            self.say(f"  {line}")
        self.say(market.RATES_NOTE, "dim")
        name = market.quoted_task([t.name for t in self.tasks])
        task = next((t for t in self.tasks if t.name == name), None)
        if task is None:
            return
        with self.user() as user:
            q = user.quote(self._spec(task))
        self.quote_ids[task.name] = q.id
        self.say(f"alice asks for a binding quote for {task.name} ({task.purpose}):")
        self.console.print(market.quote_table(q, self.labels))
        self.say(
            f"it is submitted with quote {q.id}, option 1: charged at most its max charge while "
            "it runs as stated, whatever the price does meanwhile (cpnet submit --quote).",
            "dim",
        )
        self._auction(pools)

    def _auction(self, pools: dict[str, str]) -> None:
        """alice reserves capacity by sealed-bid auction; the award becomes a lease."""
        r = market.RESERVE
        self.say(
            f"alice asks for a reservation: {r['cpu_cores']} cores and {r['ram_gb']} GB for "
            f"{market.RESERVE_WINDOW_S / 60:g} minutes, at most {market.RESERVE_MAX_PRICE} CNY "
            f"per hour (cpnet auction create); {market.API_BIDDER} bids {market.API_BID}/h "
            f"through the API, {market.RULE_BIDDER} by its standing rule ({market.RULE_FACTOR:g}"
            " × its price book); the bids are sealed until alice closes them:"
        )
        got = market.reserve(self.net.url, self.user_token, self.padmin_tokens, pools)
        self.console.print(market.bids_table(got.auction, self.labels, pools))
        if got.lease is None:
            self.say(f"no lease: {got.auction.reason}", "yellow")
            return
        self.lease_id = got.lease.id
        self.say(market.lease_line(got.lease, self.labels))

    # -- 5. the workload -----------------------------------------------------------------------

    def submit(self) -> None:
        self.step(f"5. Workload: {len(self.tasks)} tasks")
        if self.lease_id is not None and not market.wait_live(
            self.net.url, self.user_token, self.lease_id
        ):
            self.say("the lease's window has not begun yet: the tasks go on without it", "yellow")
        with self.user() as user:
            for t in self.tasks:
                spec = self._spec(t)
                if t.name in self.quote_ids:
                    spec["quote_id"] = self.quote_ids[t.name]
                t.task_id = user.submit(spec).id
            held = user.account(self.user_org)
        self.say(
            f"submitted {len(self.tasks)} tasks as alice (tag {TAG}={self.run_id}); each holds "
            "its most likely charge × 1.5 in escrow until it ends:"
        )
        self.say(f"  {USER_ORG}: {market.account_line(held)}")
        self.say("the scheduler places each on a pool, the agents run them:")

    def follow(self) -> None:
        """Show the tasks until all have ended (cancelling the one meant to be cancelled)."""
        cancelled: set[str] = set()
        timeout = TASKS_TIMEOUT_S + EXTRA_S_PER_TASK * max(0, len(self.tasks) - LARGE)
        deadline = time.monotonic() + timeout
        poll = POLL_S if len(self.tasks) <= LARGE else 4 * POLL_S
        with self.user() as user, view.Board(self.console, self.tasks, self.labels) as board:
            while True:
                self.net.check_alive()
                self.views = {
                    v.id: v for v in user.iter_tasks(tags={TAG: self.run_id}, page_size=1000)
                }
                board.update(self.views)
                for t in self.tasks:
                    v = self.views.get(t.task_id)
                    running = v is not None and v.state is State.RUNNING
                    if t.cancel_when_running and running and t.task_id not in cancelled:
                        cancelled.add(t.task_id)
                        user.cancel(t.task_id)
                        board.note(f"{t.name} is RUNNING: cancelling it (cpnet cancel)")
                if board.finished() >= len(self.tasks):
                    break
                if time.monotonic() > deadline:
                    board.note(f"gave up waiting after {timeout:g}s")
                    break
                time.sleep(poll)

    # -- 6. the summary ------------------------------------------------------------------------

    def summarise(self) -> bool:
        """Print the summary; True when every task did what it should."""
        self.step("6. Summary")
        outcomes = [view.Outcome(t, self.views.get(t.task_id), []) for t in self.tasks]
        for o in outcomes:
            o.problems = o.task.problems(o.view, self.site_of)
        per_pool, per_task = view.summary_tables(outcomes, self.pools, self.labels)
        self.say("Tasks each pool ran:", "bold")
        self.console.print(per_pool)
        self.console.print()
        self.say("Every task, where it ran and how long it took:", "bold")
        self.console.print(per_task)
        failures = view.failure_lines(outcomes)
        if failures:
            self.console.print()
            self.say("Tasks that did not complete, with the reasons the hub recorded:", "bold")
            for line in failures:
                self.console.print(line, soft_wrap=True)
        self._explain(outcomes)
        self._outputs(outcomes)
        books_ok = self._bill()
        self.console.print()
        bad = [o for o in outcomes if o.problems]
        if not books_ok:
            self.say("The books do not balance: see the problems above.", "bold red")
            return False
        if not bad:
            self.say(
                f"All {len(outcomes)} tasks reached their expected state on the expected pools.",
                "bold green",
            )
            return True
        self.say(f"{len(bad)} of {len(outcomes)} tasks did not do what they should:", "bold red")
        for o in bad:
            self.say(f"  {o.task.name}: {'; '.join(o.problems)}", "red")
        return False

    def _bill(self) -> bool:
        """alice's bill, itemised, reconciled to the fen; then the operator checks the books."""
        self.step("7. The bill and the books")
        names = {t.task_id: t.name for t in self.tasks}
        if self.lease_id is not None:
            lease = market.end_lease(self.net.url, self.user_token, self.lease_id)
            names[lease.id] = "lease (reservation)"
            self.say(
                f"alice's work is done: she ends her lease early (cpnet lease cancel) and pays "
                f"the {money.fmt(lease.charged)} its window cost so far; the rest of its hold "
                "goes back. Her tasks that ran on it have no lines of their own:"
            )
        with self.user() as user:
            bill = user.bill(self.user_org, market.period_now())
            acc = user.account(self.user_org)
        self.console.print(market.bill_table(bill, names, self.labels))
        for line in market.bill_lines(bill):
            self.say(line)
        self.say(f"{USER_ORG} now: {market.account_line(acc)}")
        check = market.check_books(self.net.root)
        self.say(f"$ {check.command}", "dim")
        self.say(check.text, "green" if check.ok else "bold red")
        return check.ok and bill.charged == bill.payouts + bill.fees

    def _explain(self, outcomes: list[view.Outcome]) -> None:
        """The scheduler's explanations for two tasks: the GPU one and an unconstrained one."""
        picks = [
            next((o for o in outcomes if o.view and o.task.name == name), None)
            for name in EXPLAINED
        ]
        with self.user() as user:
            for o in picks:
                if o is None:
                    continue
                self.console.print()
                try:
                    data = user.explain(o.task.task_id)
                except CpnetError as err:  # only an illustration: the verdict does not need it
                    self.say(f"(no explanation for {o.task.name}: {err})", "dim")
                    continue
                for line in view.explain_lines(o.task.name, data, self.labels):
                    self.console.print(line, soft_wrap=True)

    def _outputs(self, outcomes: list[view.Outcome]) -> None:
        for o in outcomes:
            if o.task.output is None or o.view is None or o.view.state is not State.COMPLETE:
                continue
            good = not any("output" in p for p in o.problems)
            lines = (o.task.output_text or "").count("\n")
            verdict = "matches the expected report" if good else "does NOT match"
            self.console.print()
            self.say(
                f"{o.task.name} wrote {o.task.output} ({lines} lines) via its file:// output; "
                f"its content {verdict}.",
                "green" if good else "red",
            )

    # -- 6. keep running -------------------------------------------------------------------------

    def hand_over(self) -> None:
        """Print how to use the network that stays running, and how to stop it."""
        url, user = self.net.url, self.user_token
        env_file = self.net.root / "demo.env"
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                f"export CPNET_HUB={shlex.quote(url)}\nexport CPNET_TOKEN={shlex.quote(user)}\n"
            )
        task = next((t.task_id for t in self.tasks if t.task_id), "TASK_ID")
        pool = self.pools[0].id if self.pools else "POOL_ID"
        base = f"{_cpnet_command()} --hub {url} --token {user}"
        self.step("The network keeps running (--keep)")
        for line in (
            f"hub URL      {url}",
            f"dashboard    {url}/ui/   (sign in with a token below)",
            f"user token   {user}   (alice, {USER_ORG})",
            f"admin token  {self.admin_token}",
            f"data dir     {self.net.root}   (logs: hub.log, sites/*/agent.log)",
            "",
            "Try:",
            f"  {base} tasks",
            f"  {base} pools",
            f"  {base} explain {task}",
            f"  {base} resolve {pool} --verify",
            f"or `source {env_file}` and then simply `{_cpnet_command()} tasks`.",
            "",
            f"Stop it with:  kill $(cat {self.net.pids_file})",
        ):
            self.say(line)


def _cpnet_command() -> str:
    """How to call this cpnet from a shell: ``cpnet`` if that is it on PATH, else a full path."""
    script = Path(sys.executable).parent / "cpnet"
    if shutil.which("cpnet") == str(script):
        return "cpnet"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m cpnet"


def run_demo(data_dir: Path | None, keep: bool, tasks: int) -> int:
    """Run the demo; return the exit code: 0 only if every task ended as expected.

    ``data_dir`` holds the hub's store, the agents' configs and every log (default: a fresh
    temporary directory, removed after a successful run). With ``keep`` the hub and agents stay
    running afterwards; otherwise every process the demo started is stopped, also on errors and
    on Ctrl-C.
    """
    console = view.make_console()
    try:
        root, temporary = _data_root(data_dir)
    except DemoError as err:
        console.print(Text(f"error: {err}", style="bold red"), soft_wrap=True)
        return 2
    console.print(
        Text.assemble(
            ("cpnet demo", "bold"),
            ": a compute power internet on this machine — one hub, three providers' sites in "
            "three national hub regions, and a mixed workload placed across them.",
        ),
        soft_wrap=True,
    )
    console.print(Text(f"data dir: {root}", style="dim"), soft_wrap=True)
    net = LocalNetwork(root, heartbeat_s=HEARTBEAT_S)
    demo = Demo(console, net, tasks)
    code = 1
    started = time.monotonic()
    with _sigterm_interrupts():
        try:
            demo.start_hub()
            demo.start_agents(demo.create_sites())
            demo.discover()
            demo.price_and_quote()
            demo.submit()
            demo.follow()
            code = 0 if demo.summarise() else 1
            if keep:
                demo.hand_over()
                net.detach()
        except KeyboardInterrupt:
            console.print()
            console.print(Text("interrupted: stopping the demo network", style="yellow"))
            code = 130
        except (DemoError, NetworkError, CpnetError) as err:
            console.print(Text(f"error: {err}", style="bold red"), soft_wrap=True)
            code = 1
        finally:
            if not net.detached:
                _shut_down(console, net)
    elapsed = time.monotonic() - started
    if net.detached:
        console.print(
            Text(f"demo finished in {elapsed:.1f}s; the network is still running", style="dim")
        )
    elif temporary and code == 0:
        shutil.rmtree(root, ignore_errors=True)
        console.print(Text(f"demo finished in {elapsed:.1f}s; everything stopped", style="dim"))
    else:
        console.print(
            Text(
                f"demo finished in {elapsed:.1f}s; everything stopped; logs in {root}", style="dim"
            ),
            soft_wrap=True,
        )
    return code


def _shut_down(console: Console, net: LocalNetwork) -> None:
    """Stop every process of the network, saying what is stopped."""
    members = net.members()
    if not members:
        return
    with console.status("stopping agents, task runners and the hub…"):
        # A second Ctrl-C (or a SIGTERM) must not leave half the network behind: stopping is
        # bounded (SIGKILL after a grace period), so let it finish.
        in_main = threading.current_thread() is threading.main_thread()
        wanted = (signal.SIGINT, signal.SIGTERM)
        previous = [signal.signal(sig, signal.SIG_IGN) for sig in wanted] if in_main else []
        try:
            net.stop()
        finally:
            for sig, handler in zip(wanted, previous, strict=False):
                signal.signal(sig, handler)
    pids = ", ".join(f"{m.name} {m.pid}" for m in members)
    console.print(Text(f"stopped: {pids}", style="dim"), soft_wrap=True)
