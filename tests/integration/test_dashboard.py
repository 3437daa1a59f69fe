"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real hub with
real agents: sign in, see the sites on the map, follow a task through its states on its page, see a
site go offline when its agent stops, switch to Chinese. Screenshots are saved as artefacts in
build/test-artifacts/dashboard/ (CPNET_TEST_ARTIFACTS overrides): look at them."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Chromium on a machine without a network to phone home to (docs of the machine: these keep it
# from trying), as root (no sandbox), without a GPU.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]


def _artefacts() -> Path:
    d = (
        Path(os.environ.get("CPNET_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
        / "dashboard"
    )
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def browser():
    from services import need_service

    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        need_service("chromium", "apt-get install chromium (Debian)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("playwright", "pip install playwright (the dev extra)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def scored_hub(tmp_path: Path) -> Iterator[HubProc]:
    """A hub whose SLA sweep scores pools every second (reputations for the providers page)."""
    from services import free_port

    h = HubProc(tmp_path / "hub", free_port())
    h.env = {"CPNET_SLA_INTERVAL_S": "1"}
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


def test_dashboard_in_a_browser(tmp_path: Path, scored_hub: HubProc, agents, browser):
    hub = scored_hub
    shots = _artefacts()
    world = make_world(hub, {"gz": ("general", "440100"), "sh": ("intelligent", "310000")})
    started = {}
    # 360 CNY a core-hour: a few seconds cost cents, so the task's bill has a line.
    for name, cores in (("gz", 4), ("sh", 2)):
        a = AgentProc(
            hub,
            world.site_tokens[name],
            tmp_path / f"agent-{name}",
            [pool("cpu", cores=cores, price=360.0)],
        )
        a.start()
        agents.append(a)
        started[name] = a
    user = hub.client(world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 30, "both pools online")

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # /ui redirects to the app, which asks for a token first.
    page.goto(f"{hub.url}/ui", wait_until="load")
    page.wait_for_selector("[data-testid=token]")
    page.fill("[data-testid=token]", "not-a-token")
    page.click("[data-testid=sign-in]")
    page.wait_for_selector("[data-testid=login-error]:not(:empty)")
    page.fill("[data-testid=token]", world.user_token)
    page.click("[data-testid=sign-in]")

    # The map: 34 provinces and both sites, online, where their cities are.
    page.wait_for_selector(
        "[data-testid=map] circle.site[data-online=true] >> nth=1", timeout=30_000
    )
    assert page.locator("[data-testid=map] path.province").count() == 34
    sites = {
        c.get_attribute("data-site-id"): c.get_attribute("data-online")
        for c in page.locator("[data-testid=map] circle.site").all()
    }
    assert sites == {world.site_ids["gz"]: "true", world.site_ids["sh"]: "true"}
    gz = page.locator(f"circle.site[data-site-id='{world.site_ids['gz']}']").bounding_box()
    sh = page.locator(f"circle.site[data-site-id='{world.site_ids['sh']}']").bounding_box()
    assert gz and sh and gz["x"] < sh["x"] and gz["y"] > sh["y"]  # Guangzhou: west and south
    assert page.inner_text("[data-testid=sites-online]") == "2 / 2"
    assert page.inner_text("[data-testid=cores]").endswith("/ 6")
    assert page.locator("[data-testid=pool-row]").count() == 2
    # SCU rates: the catalogue has no "test cpu", so none until measured.
    assert page.locator("[data-testid=pool-scu]").all_inner_texts() == ["–", "–"]
    page.fill("[data-testid=pool-filter]", "shanghai")
    wait_until(lambda: page.locator("[data-testid=pool-row]").count() == 1, 30, "the filter")
    page.fill("[data-testid=pool-filter]", "")
    page.wait_for_selector("[data-testid=live].on")
    # A link the operator declares between the two sites is drawn, live (dashed: declared).
    r = httpx.put(
        f"{hub.url}/v1/network/links",
        json={
            "a": f"site:{world.site_ids['gz']}",
            "b": f"site:{world.site_ids['sh']}",
            "rtt_ms": 28,
            "mbps": 1000,
        },
        headers={"authorization": f"Bearer {hub.admin_token}"},
    )
    assert r.status_code == 200, r.text
    link = page.locator("[data-testid=map] line.link.declared")
    link.wait_for(timeout=30_000)
    assert "28.0 ms" in (link.locator("title").text_content() or "")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # A task on its page: its states as they come, its events and its output.
    t = user.submit(
        {
            "name": "hello",
            "executors": [
                {"command": ["sh", "-c", "sleep 10; echo hello from cpnet | tee out.txt"]}
            ],
            "outputs": [{"path": "out.txt", "url": "cpnet://blobs/"}],
        }
    )
    page.goto(f"{hub.url}/ui/#/tasks/{t.id}")
    page.wait_for_selector("[data-testid=task-state]:text-is('RUNNING')", timeout=60_000)
    page.screenshot(path=str(shots / "task-running.png"), full_page=True)
    page.wait_for_selector("[data-testid=task-state]:text-is('COMPLETE')", timeout=60_000)
    assert "hello from cpnet" in page.inner_text("[data-testid=stdout]")
    # The data it moved: its output, staged to the hub's blob store, checksummed.
    page.wait_for_selector("[data-testid=transfer-row]")
    moved = page.inner_text("[data-testid=transfer-row]")
    sha = hashlib.sha256(b"hello from cpnet\n").hexdigest()
    cells = moved.split("\t")
    assert cells[0] == "out out.txt" and cells[1] == "17", moved
    assert cells[3] == f"cpnet://blobs/{sha}" and cells[4] == "✓", moved
    moves = page.locator("[data-testid=event-row]").all_inner_texts()
    assert any("QUEUED" in m and "RUNNING" in m for m in moves) or any(
        "→ RUNNING" in m for m in moves
    )
    assert any("→ COMPLETE" in m for m in moves), moves
    # Its bill: the lines of this month's bill that charged it, as the API has them.
    month = time.strftime("%Y-%m", time.gmtime())
    bill = httpx.get(
        f"{hub.url}/v1/accounts/{world.org_id}/bill",
        params={"period": month},
        headers={"authorization": f"Bearer {world.user_token}"},
    ).json()
    mine = [x for x in bill["lines"] if x["task_id"] == t.id]
    assert mine, bill  # settled as it ended
    wait_until(lambda: page.locator("[data-testid=bill-row]").count() == len(mine), 30, "its bill")
    page.screenshot(path=str(shots / "task-complete.png"), full_page=True)
    # The flow chart's scale counts it (one task moved this minute: queued, running, complete).
    page.goto(f"{hub.url}/ui/#/")
    page.wait_for_selector("[data-testid=flow-max]")
    assert (page.text_content("[data-testid=flow-max]") or "").split()[0] in {"1", "2", "3"}

    # The account: balance and this month's bill.
    page.click("[data-testid=nav-account]")
    page.wait_for_selector("[data-testid=balance]")
    assert page.locator("[data-testid=bill-row]").count() == len(bill["lines"])
    assert page.locator("[data-testid=ledger-check]").count() == 0  # the operator's only
    # The balance as the API has it, written as people read it (thousands grouped).
    acc = httpx.get(
        f"{hub.url}/v1/accounts/{world.org_id}",
        headers={"authorization": f"Bearer {world.user_token}"},
    ).json()
    shown = f"{acc['balance'] / 10 ** acc['minor_digits']:,.{acc['minor_digits']}f}"
    assert page.inner_text("[data-testid=balance]") == f"{shown} {acc['currency']}"
    page.screenshot(path=str(shots / "account.png"), full_page=True)

    # Providers: each pool's reputation with the figures it was made of, as the API has them.
    gz_pool = next(p.id for p in user.pools() if p.site_id == world.site_ids["gz"])

    def scored() -> dict | None:
        r = httpx.get(
            f"{hub.url}/v1/reputation", headers={"authorization": f"Bearer {world.user_token}"}
        ).json()["pools"]
        return next((x for x in r if x["pool_id"] == gz_pool and x["evidence"]["attempts"]), None)

    rep = wait_until(scored, 60, "the hub's first scoring of the pool that ran the task")
    page.click("[data-testid=nav-providers]")
    row = page.locator(f"[data-testid=rep-row][data-pool-id='{gz_pool}']")
    row.wait_for()
    assert row.locator("[data-testid=rep-score]").inner_text() == f"{rep['score']:.3f}"
    assert f"attempts {rep['evidence']['attempts']}" in row.inner_text()
    page.screenshot(path=str(shots / "providers.png"), full_page=True)

    # Back on the map: the Shanghai agent stops; its site goes grey without a reload.
    page.goto(f"{hub.url}/ui/#/")
    page.wait_for_selector("[data-testid=map] circle.site >> nth=1")
    assert page.locator("[data-testid=task-link]").first.inner_text() == "hello"
    started["sh"].kill()
    page.wait_for_selector(
        f"circle.site[data-site-id='{world.site_ids['sh']}'][data-online=false]", timeout=60_000
    )
    assert page.inner_text("[data-testid=sites-online]") == "1 / 2"
    page.screenshot(path=str(shots / "site-offline.png"), full_page=True)

    # In Chinese.
    page.click("[data-testid=lang]")
    page.wait_for_selector("text=算力互联网")
    page.wait_for_selector("[data-testid=map] circle.site >> nth=1")
    page.screenshot(path=str(shots / "overview-zh.png"), full_page=True)
    page.click("[data-testid=lang]")

    # The operator: every organisation's tasks, and the ledger's check.
    page.click("[data-testid=sign-out]")
    page.wait_for_selector("[data-testid=token]")
    page.fill("[data-testid=token]", hub.admin_token)
    page.click("[data-testid=sign-in]")
    page.wait_for_selector("[data-testid=who]:has-text('admin')")
    page.click("[data-testid=nav-account]")
    page.wait_for_selector("[data-testid=ledger-check]:has-text('balanced')")
    page.screenshot(path=str(shots / "operator-ledger.png"), full_page=True)
    assert not errors, errors


def test_dashboard_api_shows_only_the_callers_tasks(hub: HubProc, agents):
    """A user sees their organisation's tasks in the dashboard's data (an admin everyone's);
    sites and pools are public discovery for all; no token, no data."""
    mine = make_world(hub, {"a": ("general", "440100")})
    other = make_world(hub, {"b": ("general", "110000")}, org="beta")
    hub.client(mine.user_token).submit(
        {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 64}}
    )

    def tasks(token: str) -> dict:
        r = httpx.get(f"{hub.url}/v1/dashboard", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()

    assert tasks(mine.user_token)["tasks"]["QUEUED"] == 1
    assert tasks(other.user_token)["tasks"]["QUEUED"] == 0
    assert tasks(hub.admin_token)["tasks"]["QUEUED"] == 1
    assert sum(m["queued"] for m in tasks(other.user_token)["flow"]) == 0
    assert sum(m["queued"] for m in tasks(mine.user_token)["flow"]) == 1
    seen = {s["id"] for s in tasks(other.user_token)["sites"]}
    assert seen == {mine.site_ids["a"], other.site_ids["b"]}
    assert httpx.get(f"{hub.url}/v1/dashboard").status_code == 401
    # The stream: an event now, with the same body.
    with httpx.stream(
        "GET",
        f"{hub.url}/v1/dashboard/stream",
        headers={"authorization": f"Bearer {mine.user_token}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "event: overview"
        data = next(lines)
        assert data.startswith("data: {") and '"QUEUED":1' in data


def test_a_page_still_loading_never_draws_over_the_next(hub: HubProc, browser):
    """A page whose data arrives after the user has moved on stays out of sight: here the
    overview's sign-in check is held back while the user opens the account page, then let go.
    (Under load, such a late overview replaced the operator's account page in CI.)"""
    world = make_world(hub, {"gz": ("general", "440100")})
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{hub.url}/ui", wait_until="load")
    page.wait_for_selector("[data-testid=token]")
    page.fill("[data-testid=token]", world.user_token)
    page.click("[data-testid=sign-in]")
    page.wait_for_selector("[data-testid=map]")

    held: list = []

    def hold_first(route) -> None:  # the browser's network: the one boundary faked here
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/v1/whoami", hold_first)
    page.click("[data-testid=lang]")  # the overview again, in Chinese: its whoami is held
    wait_until(lambda: held, 30, "the overview's held sign-in check")
    page.evaluate("location.hash = '#/account'")
    page.wait_for_selector("[data-testid=balance]")
    with page.expect_response("**/v1/whoami"):
        held[0].continue_()
    # Let the late overview run to its end (its response is in; a second of the page's own time).
    page.evaluate("() => new Promise((r) => setTimeout(r, 1000))")
    assert page.locator("[data-testid=balance]").count() == 1
    assert page.locator("[data-testid=map]").count() == 0
    assert not errors, errors
