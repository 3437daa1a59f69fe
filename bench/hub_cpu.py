"""The hub's CPU per trivial task end to end (issue 15, item 2), and where it goes.

One hub and one local agent (real processes, as `throughput.py` starts them); ``--tasks`` ×
``true`` submitted as arrays through ``POST /v1/tasks:batch`` (SDK ``submit_many``); the run
ends when the agent has had every attempt's end acknowledged (read from its work dir: costs the
hub nothing), then one list call confirms none is left. Reports the hub's, the agent's and the
runners' CPU per task from ``/proc``, and with ``--profile FILE`` records the hub with
``py-spy record --gil`` (CPU samples only) as a speedscope or raw (collapsed) file.

After the run, ``cpnet ledger check`` and ``cpnet audit verify`` must pass on the hub's store.

Run: ``.venv/bin/python bench/hub_cpu.py [--tasks 1000] [--profile hub.txt]``; prints one JSON
line. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from common import (
    PY,
    Agent,
    BenchError,
    Hub,
    Procs,
    child_env,
    make_world,
    pool_table,
    trap_sigterm,
    wait_until,
)
from throughput import NON_TERMINAL, spec

from cpnet.client import Client


def user_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def requests(hub: Hub) -> dict[str, float]:
    """Requests the hub served so far by method and route (its /metrics counter)."""
    r = httpx.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {hub.admin_token}"})
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("cpnet_http_requests_total{"):
            labels, value = line[len("cpnet_http_requests_total{") :].rsplit("} ", 1)
            f = dict(x.split("=", 1) for x in labels.split('",') if "=" in x)
            key = f"{f['method'].strip(chr(34))} {f['route'].strip(chr(34))}"
            out[key] = out.get(key, 0) + float(value)
    return out


def run(tasks: int, concurrency: int, profile: str | None, rate: int, idle_s: float) -> dict:
    with Procs() as procs:
        hub = Hub(procs.scratch("hub"), None)
        hub.init()
        hub.start(procs)
        world = make_world(hub, ["bench-site"])
        pools = [pool_table("bench", float(concurrency), max(1.0, concurrency * 0.5))]
        agent = Agent(hub, world.site_tokens["bench-site"], procs.scratch("agent"), pools, 5.0)
        agent.start(procs)
        user = Client(hub.url, world.user_token, timeout=120)

        def online() -> bool:
            agent.check()
            return any(x.name == "bench" for x in user.pools())

        wait_until(online, 60, "the agent's pool to come online", every=0.2)
        # warm up: a few tasks through every path before measuring
        warm = [spec("warm", i) for i in range(8)]
        user.submit_many(warm)
        db = sqlite3.connect(f"file:{hub.data_dir / 'cpnet.db'}?mode=ro", uri=True)
        marks = ",".join("?" * len(NON_TERMINAL))

        def left() -> int:
            q = f"SELECT count(*) FROM tasks WHERE state IN ({marks})"
            return db.execute(q, NON_TERMINAL).fetchone()[0]

        wait_until(lambda: left() == 0, 60, "warm-up", every=0.1)

        # The hub's CPU while idle (its loops, uvicorn's tick, the agent's heartbeats and long
        # poll): part of every figure per task below, in proportion to the run's wall time.
        idle0, t_idle = hub.cpu()[0], time.time()
        time.sleep(idle_s)
        idle = (hub.cpu()[0] - idle0) / (time.time() - t_idle)
        spy = None
        if profile:
            exe = shutil.which("py-spy", path=os.path.dirname(PY)) or "py-spy"
            fmt = "speedscope" if profile.endswith(".json") else "raw"
            argv = [exe, "record", "--gil", "-r", str(rate), "-f", fmt, "-o", profile]
            spy = subprocess.Popen(
                [*argv, "--pid", str(hub.proc.pid)],  # type: ignore[union-attr]
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=child_env(),
            )
            time.sleep(1.0)  # py-spy attaches
        run_id = uuid.uuid4().hex[:8]
        specs = [spec(run_id, i) for i in range(tasks)]
        req0 = requests(hub)
        hub0, agent0, us0 = hub.cpu(), agent.cpu(), user_sys(hub.proc.pid)
        t0 = time.time()
        items = user.submit_many(specs)
        if any(x.status != 201 for x in items):
            raise BenchError("not every task was created")
        deadline = time.monotonic() + 600
        time.sleep(0.5)
        while left():
            agent.check()
            if time.monotonic() > deadline:
                raise BenchError("the tasks did not end within 600 s")
            time.sleep(0.2)
        wall = time.time() - t0
        hub1, agent1, us1 = hub.cpu(), agent.cpu(), user_sys(hub.proc.pid)
        req1 = requests(hub)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        calls = dict(
            db.execute(
                "SELECT action, count(*) FROM audit_records WHERE action LIKE '% /%' "
                "AND at >= ? GROUP BY action",
                (t0,),
            ).fetchall()
        )
        views = list(user.iter_tasks(tags={"bench": run_id}, page_size=1000))
        user.close()
        complete = sum(v.state.value == "COMPLETE" for v in views)
        hub_cpu = hub1[0] - hub0[0]
        checks = {}
        for what in (["ledger", "check"], ["audit", "verify"]):
            out = subprocess.run(
                [PY, "-m", "cpnet", *what, "--data-dir", str(hub.data_dir)],
                capture_output=True,
                text=True,
                env=child_env(),
            )
            checks[" ".join(what)] = out.returncode
        return {
            "tasks": tasks,
            "complete": complete,
            "wall_s": round(wall, 2),
            "tasks_s": round(tasks / wall, 1),
            "hub_ms_per_task": round(hub_cpu / tasks * 1000, 2),
            "hub_user_sys_ms_per_task": [
                round((b - a) / tasks * 1000, 2) for a, b in zip(us0, us1, strict=True)
            ],
            "agent_ms_per_task": round((agent1[0] - agent0[0]) / tasks * 1000, 2),
            "runners_ms_per_task": round((agent1[1] - agent0[1]) / tasks * 1000, 2),
            "idle_hub_ms_per_s": round(idle * 1000, 2),
            "idle_share_ms_per_task": round(idle * wall / tasks * 1000, 2),
            "checks_rc": checks,
            "audited_calls": calls,
            "requests": {k: v - req0.get(k, 0) for k, v in req1.items() if v > req0.get(k, 0)},
            "loadavg": os.getloadavg(),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--profile", help="py-spy output file (.json: speedscope; else collapsed)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds the idle hub is measured")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = ap.parse_args()
    trap_sigterm()
    print(json.dumps(run(args.tasks, args.concurrency, args.profile, args.rate, args.idle)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
