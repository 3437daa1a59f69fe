"""Who may read a blob (store/blobs.py), against SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import select

from cpnet.auth.model import Principal, Role
from cpnet.hub.scheduling import schedule_once
from cpnet.store import accounts
from cpnet.store import blobs as grants
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt
from cpnet.tasks.states import State

from .test_store import _finish, _spec, _world, store  # noqa: F401 (the fixture)

SHA = "ab" * 32


def _agent(site: str, org: str) -> Principal:
    return Principal(token_id="a", role=Role.AGENT, org_id=org, site_id=site)


def test_grants_follow_orgs_and_running_attempts(store: Store) -> None:  # noqa: F811
    who, sites = _world(store, n_sites=2)
    now = time.time()
    with store.tx() as s:
        other_org = accounts.create_org(s, "globex", now)
        grants.grant(s, SHA, who.org_id, now)
        grants.grant(s, SHA, who.org_id, now)  # idempotent
        # The task names the blob as an input; an agent reads it only while running such a task.
        inp = {"path": "in.txt", "url": f"cpnet://blobs/{SHA}"}
        ts.create_task(s, who, _spec(inputs=[inp]), now)
    stranger = Principal(token_id="o", role=Role.USER, org_id=other_org.id)
    admin = Principal(token_id="x", role=Role.ADMIN, org_id=other_org.id)
    with store.read() as s:
        assert grants.may_read(s, who, SHA)
        assert not grants.may_read(s, who, "cd" * 32)
        assert not grants.may_read(s, stranger, SHA)
        assert grants.may_read(s, admin, SHA)
        assert not grants.may_read(s, _agent(sites[0], who.org_id), SHA)  # runs nothing yet

    assert schedule_once(store, time.time()).placed == 1
    with store.read() as s:
        a = s.scalar(select(Attempt))
        assert a is not None
        attempt_id = a.id
        site, idle = (sites[0], sites[1]) if a.site_id == sites[0] else (sites[1], sites[0])
        assert grants.may_read(s, _agent(site, who.org_id), SHA)  # runs the org's task
        assert not grants.may_read(s, _agent(idle, who.org_id), SHA)
        assert grants.attempt_org(s, attempt_id, site) == who.org_id
        assert grants.attempt_org(s, attempt_id, idle) is None
    _finish(store, site, attempt_id, State.INITIALIZING, State.RUNNING, State.COMPLETE)
    with store.read() as s:
        assert not grants.may_read(s, _agent(site, who.org_id), SHA)  # the attempt is over


def test_an_agent_reads_only_the_blobs_its_running_tasks_name(store: Store) -> None:  # noqa: F811
    """Running some task of the blob's organisation is not enough: the task must name the blob
    as an input (knowing a hash is not enough)."""
    who, sites = _world(store, n_sites=1)
    now = time.time()
    other = "ef" * 32
    with store.tx() as s:
        grants.grant(s, SHA, who.org_id, now)
        grants.grant(s, other, who.org_id, now)
        inp = {"path": "in.txt", "url": f"cpnet://blobs/{SHA}#part"}
        ts.create_task(s, who, _spec(inputs=[inp], description=f"mentions {other}"), now)
    assert schedule_once(store, time.time()).placed == 1
    agent = _agent(sites[0], who.org_id)
    with store.read() as s:
        assert grants.may_read(s, agent, SHA)  # an input (with a fragment)
        assert not grants.may_read(s, agent, other)  # granted to the org, but no input of it
