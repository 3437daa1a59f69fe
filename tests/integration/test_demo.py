"""`cpnet demo` as a user runs it: a real hub, three agents, a workload, and nothing left over."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cpnet.agent import hostinfo
from cpnet.client import Client
from cpnet.demo.checks import processes_under
from cpnet.demo.network import kill_runners

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 180
SITE_POOLS = ("guiyang/cpu", "ulanqab/a800", "tianjin/fp64")
POOL_ID = re.compile(r"\bcn\.dev(?:\.[a-z0-9-]+)+")


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    return subprocess.run(
        [sys.executable, "-m", "cpnet", "demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def left_under(root: Path) -> list[str]:
    """The command lines of live processes started for the demo in ``root`` (none, once it ends)."""
    out = []
    for pid in processes_under(root):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone since
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if hostinfo.alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if hostinfo.alive(p)]


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    """The demo's data dir; whatever the demo left running there is stopped afterwards."""
    root = tmp_path / "demo"
    yield root
    pids_file = root / "pids"
    pids = [int(x) for x in pids_file.read_text().split()] if pids_file.exists() else []
    for pid in pids:
        if hostinfo.alive(pid):
            os.kill(pid, signal.SIGTERM)
    for pid in wait_gone(pids, 15):
        os.kill(pid, signal.SIGKILL)
    for work in root.glob("sites/*/work"):
        kill_runners(work)


def test_demo_runs_everything_and_stops_everything(demo_dir: Path):
    out = run_demo("--data-dir", str(demo_dir), "--tasks", "8")
    log = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, log
    summary = out.stdout.split("6. Summary", 1)[1]
    assert "All 8 tasks reached their expected state" in summary, log
    for label in SITE_POOLS:
        assert label in summary, log
    assert len(set(POOL_ID.findall(summary.split("Every task", 1)[0]))) == 3, log
    # Every process it started, as it reported them, is gone; and nothing else runs there.
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out.stdout)]
    assert len(pids) == 4, log  # the hub and three agents
    assert wait_gone(pids, 5) == []
    assert left_under(demo_dir) == []
    assert not (demo_dir / "pids").exists()
    # The pipeline's file:// output arrived with the expected report.
    report = (demo_dir / "outputs" / "pipeline-guizhou.csv").read_text()
    assert report.startswith("GY01,80,")

    # The market: price books published, a binding quote before the quoted task was submitted,
    # holds while the tasks ran, and a bill that reconciles with the payouts and fees.
    market = out.stdout.split("4. Market", 1)[1].split("5. Workload", 1)[0]
    assert "tianjin: 54 CNY per core-hour with a utilisation rule" in market, log
    quote = re.search(r"binding quote for stencil-hpc.*?\bquote (quo_[a-z0-9]+)", market, re.S)
    assert quote and "tianjin/fp64" in market, log
    # A reservation by auction: two sealed bids (one by API, one by rule), an award, a lease.
    assert re.search(r"auction auc_[a-z0-9]+: awarded", market), log
    assert "│ API " in market and "│ rule " in market, log
    assert re.search(r"lease lse_[a-z0-9]+ on \w+/\w+: 8 cores, 16 GB", market), log
    workload = out.stdout.split("5. Workload", 1)[1].split("6. Summary", 1)[0]
    held = re.search(r"held for queued and running tasks (\d+\.\d\d) CNY", workload)
    assert held and float(held.group(1)) > 0, log
    books = out.stdout.split("7. The bill and the books", 1)[1]
    totals = re.search(
        r"charged (\d+\.\d\d) CNY = providers' payouts (\d+\.\d\d) CNY \+ platform fees "
        r"(\d+\.\d\d) CNY \(reconciles to the fen\)",
        books,
    )
    assert totals, log
    charged, payouts, fees = (round(float(x) * 100) for x in totals.groups())
    assert charged == payouts + fees and charged > 0 and fees > 0, log
    assert "stencil-hpc" in books and "the books balance" in books, log
    assert "lease (reservation)" in books and "ends her lease early" in books, log
    # An operator checks the demo's books from its data dir, offline.
    check = subprocess.run(
        [sys.executable, "-m", "cpnet", "ledger", "check", "--data-dir", str(demo_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert '"ok": true' in check.stdout and '"total": 0' in check.stdout


def test_demo_keep_leaves_a_usable_network(demo_dir: Path):
    out = run_demo("--data-dir", str(demo_dir), "--tasks", "3", "--keep")
    log = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, log
    pids = [int(x) for x in (demo_dir / "pids").read_text().split()]
    assert len(pids) == 4 and all(hostinfo.alive(p) for p in pids), log
    url = re.search(r"hub URL\s+(\S+)", out.stdout)
    token = re.search(r"user token\s+(\S+)", out.stdout)
    assert url and token, log
    with Client(url.group(1), token.group(1)) as user:
        assert user.health()["status"] == "ok"
        assert len(user.pools()) == 3
        assert len(user.tasks().tasks) == 3
    # The dashboard it prints: the page, and what the page shows — the three sites placed on
    # the map (coordinates), online, and the demo's tasks in the flow chart.
    ui = re.search(r"dashboard\s+(\S+)", out.stdout)
    assert ui and ui.group(1) == url.group(1) + "/ui/", log
    page = httpx.get(ui.group(1))
    assert page.status_code == 200 and '<div id="app">' in page.text
    shown = httpx.get(
        f"{url.group(1)}/v1/dashboard", headers={"authorization": f"Bearer {token.group(1)}"}
    ).json()
    assert len(shown["sites"]) == 3
    assert all(s["online"] and s["lat"] and s["lon"] for s in shown["sites"])
    assert sum(m["complete"] + m["failed"] for m in shown["flow"]) == 3
    assert f"kill $(cat {demo_dir / 'pids'})" in out.stdout
    # What the demo tells the user to do stops it all.
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert wait_gone(pids, 15) == []
    assert left_under(demo_dir) == []


def test_demo_refuses_a_used_data_dir(tmp_path: Path):
    (tmp_path / "something").write_text("x")
    out = run_demo("--data-dir", str(tmp_path), "--tasks", "1")
    assert out.returncode == 2
    assert "not an empty directory" in out.stdout
