"""A hub killed without a chance to stop its DNS server: the knotd it started outlives it,
holding the DNS port and answering the zone as it was. The next hub on that data dir (a
restarted process, or another replica that now leads) stops it and serves the zone itself."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from services import free_port, need_service
from tests.integration.procs import HubProc, make_world, wait_until
from tests.integration.test_dns_gateway import (
    APEX,
    DEADLINE_S,
    Gateway,
    _alive,
    _knotd_pid,
    first_answer,
    knot_problem,
)

pytestmark = pytest.mark.integration


def test_the_next_hub_stops_a_killed_hubs_knotd_and_serves_the_zone(tmp_path: Path) -> None:
    problem = knot_problem()
    if problem:
        need_service("dns", problem)
    port = free_port()
    hub = HubProc(
        tmp_path / "hub",
        free_port(),
        args=["--dns", "--dns-apex", APEX, "--dns-listen", f"127.0.0.1:{port}"],
    )
    hub.data_dir.mkdir()
    hub.init()
    hub.start()
    dns_dir = hub.data_dir / "dns"
    knotds: list[int] = []
    try:
        world = make_world(hub, {"sz1": ("intelligent", "440300")})
        gw = Gateway(hub, port, world, tmp_path)
        first_answer(lambda: gw.envelope(world.site_ids["sz1"]))
        old = _knotd_pid(dns_dir)
        assert old is not None
        knotds.append(old)

        # SIGKILL the hub alone (not its process group): knotd is left behind, serving.
        assert hub.proc is not None
        os.kill(hub.proc.pid, signal.SIGKILL)
        hub.proc.wait(timeout=30)
        assert _alive(old)
        assert gw.envelope(world.site_ids["sz1"]) is not None  # the old zone, still answered

        hub.start()  # the same data dir, ports and database
        wait_until(lambda: not _alive(old), DEADLINE_S, "the killed hub's knotd to stop")
        new = wait_until(
            lambda: (p := _knotd_pid(dns_dir)) != old and p is not None and _alive(p) and p,
            DEADLINE_S,
            "the new hub's own knotd",
            log=hub.log,
        )
        knotds.append(new)
        # The new hub's server follows the registry: a site made now is in DNS.
        later = make_world(hub, {"gz1": ("general", "440100")}, org="beta")
        first_answer(lambda: gw.envelope(later.site_ids["gz1"]))
        assert gw.envelope(world.site_ids["sz1"]) is not None
    finally:
        hub.kill()
        for pid in knotds:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
