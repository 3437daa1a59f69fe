"""The task service both front doors call (cpnet.hub.tasks), against a real hub store (SQLite)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cpnet.auth.model import Principal, Role
from cpnet.config import HubSettings
from cpnet.errors import Invalid, NotFound
from cpnet.hub import tasks
from cpnet.hub.bootstrap import init_hub
from cpnet.hub.service import Hub
from cpnet.measure.scu import predict_runtime_s, work_scu_hours
from cpnet.registry.model import PoolDescriptor, Region, Registration
from cpnet.store import accounts, registry
from cpnet.store import tasks as store
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    settings = HubSettings(data_dir=tmp_path)
    init_hub(settings)
    return Hub(settings)


def users(h: Hub) -> tuple[Principal, Principal, str]:
    """Two users of two organisations, and a registered pool of the first's provider."""
    now = time.time()
    with h.store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        other = accounts.create_org(s, "globex", now)
        u1 = accounts.create_user(s, org.id, "alice", Role.USER, now)
        u2 = accounts.create_user(s, other.id, "bob", Role.USER, now)
        prov = registry.create_provider(s, org.id, "ACME", "cn.dev", now)
        site = registry.create_site(
            s, prov, name="sz1", type="general", region=Region(code="440300"), now=now
        )
        desc = PoolDescriptor(
            name="cpu", hardware={"cpu_cores": 8, "memory_gb": 32, "cpu_model": "EPYC 9654"}
        )
        res = registry.register(s, site.id, Registration(pools=[desc]), now)
    alice = Principal(token_id="t1", role=Role.USER, org_id=org.id, user_id=u1.id)
    bob = Principal(token_id="t2", role=Role.USER, org_id=other.id, user_id=u2.id)
    return alice, bob, res.pools["cpu"]


def spec(**kw: object) -> TaskSpec:
    return TaskSpec.model_validate({"executors": [{"command": ["true"]}], **kw})


def test_submit_creates_once_per_idempotency_key(hub: Hub) -> None:
    alice, _, _ = users(hub)
    first = tasks.submit(hub, alice, spec(idempotency_key="k1"))
    again = tasks.submit(hub, alice, spec(idempotency_key="k1"))
    assert first.created and not again.created
    assert again.id == first.id
    assert first.view is not None and first.view.state is State.QUEUED
    assert tasks.submit(hub, alice, spec(), view=False).view is None


def test_submit_records_notes_on_a_new_task_only(hub: Hub) -> None:
    alice, _, _ = users(hub)
    done = tasks.submit(hub, alice, spec(idempotency_key="n"), notes=["a warning"])
    tasks.submit(hub, alice, spec(idempotency_key="n"), notes=["another"])
    with hub.store.read() as s:
        assert store.notes_of(s, done.id, tasks.NOTE_PREFIX) == ["tes: a warning"]


def test_work_from_a_reference_run_is_fixed_at_submission(hub: Hub) -> None:
    alice, _, pool_id = users(hub)
    work = {"profile": "hpc", "reference_pool": pool_id, "reference_runtime_s": 1800}
    done = tasks.submit(hub, alice, spec(work=work))
    assert done.view is not None and done.view.spec.work is not None
    hours = done.view.spec.work.scu_hours
    with hub.store.read() as s:
        rate = registry.get_pool(s, pool_id).capacity["scu"]["hpc"]
    assert hours == pytest.approx(work_scu_hours(1800, rate))
    assert predict_runtime_s(hours, rate) == pytest.approx(1800)  # the two are inverses


def test_a_reference_pool_that_cannot_serve_is_refused_naming_the_field(hub: Hub) -> None:
    alice, _, _ = users(hub)
    work = {"profile": "hpc", "reference_pool": "cn.dev.no.x.y.gq", "reference_runtime_s": 60}
    with pytest.raises(Invalid) as e:
        tasks.submit(hub, alice, spec(work=work))
    assert e.value.field == "work.reference_pool"
    with hub.store.read() as s:
        assert store.list_tasks(s, alice, store.TaskFilter(), 10, None)[0] == []  # nothing kept


def test_cancel_ends_a_queued_task_and_hides_other_organisations_tasks(hub: Hub) -> None:
    alice, bob, _ = users(hub)
    done = tasks.submit(hub, alice, spec())
    with pytest.raises(NotFound):
        tasks.cancel(hub, bob, done.id)
    view = tasks.cancel(hub, alice, done.id)
    assert view.state is State.CANCELED
    assert tasks.cancel(hub, alice, done.id).state is State.CANCELED  # again: no change
