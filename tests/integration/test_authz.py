"""The authorisation matrix (issue 14, item 2): every route of the hub — native, TES, agent API,
admin, blobs, well-known — called as the owner of the objects it names, another organisation's
user, a provider admin of another provider, the agent of another site, a revoked token, and
nobody; each answer checked against the table below (OWASP API Top 10: API1 object level, API3
property level, API5 function level).

The routes come from the app's own route table, so a route without an entry here fails
``test_every_route_has_an_entry``: a new route cannot go untested. Every answer to someone who
is not the owner is searched for the owner's data (task ids and names, quote, token, blob), and
every answer at all for secrets (token hashes, private keys, tokens).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services import free_port
from tests.integration.procs import HubProc, World, app_routes, make_world

pytestmark = pytest.mark.integration

ACTORS = ("owner", "user_b", "padmin_b", "agent_b", "revoked", "anon")
DENIED = frozenset({403, 404})  # refused, or as if it did not exist
OK = frozenset({200, 201})
SECRET_ENV = "matrix-Secret-Value-9431"


@dataclass(frozen=True)
class Rule:
    """What each actor may get from one route. ``owner``: the actor owning what the path names
    ("alice", "padmin_a", "agent_a", "admin") and the answers it gets — checked only for reads,
    so the matrix changes nothing of the owner's; None: the owner is not called. Other actors:
    the answers allowed. ``public``: no token needed."""

    owner: tuple[str, frozenset[int]] | None = None
    user_b: frozenset[int] = DENIED
    padmin_b: frozenset[int] = DENIED
    agent_b: frozenset[int] = DENIED
    public: bool = False
    body: object = None  # JSON sent (placeholders like {pool_b} filled in)
    params: dict = field(default_factory=dict)
    content: bytes | None = None
    public_answers: frozenset[int] = frozenset({200})  # what a public route gives anyone


def S(*codes: int) -> frozenset[int]:
    return frozenset(codes)


PUBLIC = Rule(public=True, user_b=OK, padmin_b=OK, agent_b=OK)
OWN_LIST = Rule(owner=("alice", S(200)), user_b=S(200), padmin_b=S(200), agent_b=S(200, 403))
ADMIN_ONLY = Rule(owner=("admin", S(200)), user_b=S(403), padmin_b=S(403), agent_b=S(403))
HEARTBEAT = {"pools": []}
REGISTER = {"pools": [{"name": "intruder", "hardware": {"cpu_cores": 1, "memory_gb": 1}}]}
TASK = {"executors": [{"command": ["true"]}]}

TABLE: dict[tuple[str, str], Rule] = {
    # -- public ---------------------------------------------------------------------------------
    ("GET", "/.well-known/cpnet/keys.json"): PUBLIC,
    # The matrix's hub runs no DNS gateway: 404 for everyone (200: test_dns_gateway.py).
    ("GET", "/.well-known/cpnet/dns-anchor.json"): Rule(
        public=True, user_b=S(404), padmin_b=S(404), agent_b=S(404), public_answers=S(404)
    ),
    ("GET", "/v1/health"): PUBLIC,
    ("GET", "/ga4gh/tes/v1/service-info"): OWN_LIST,  # TES behind the hub's bearer tokens
    ("GET", "/ga4gh/tes/v1/tasks/service-info"): OWN_LIST,
    ("GET", "/v1/resolve/{identifier}"): PUBLIC,
    # -- discovery: every caller sees every pool and price (that is the point) -------------------
    ("GET", "/v1/pools"): OWN_LIST,
    ("GET", "/v1/pools/{pool_id}"): Rule(
        owner=("alice", S(200)), user_b=S(200), padmin_b=S(200), agent_b=S(200)
    ),
    ("GET", "/v1/pools/{pool_id}/prices"): Rule(
        owner=("alice", S(200)), user_b=S(200), padmin_b=S(200), agent_b=S(200)
    ),
    ("GET", "/v1/prices"): OWN_LIST,
    ("GET", "/v1/providers"): OWN_LIST,
    ("GET", "/v1/catalogue/match"): Rule(
        owner=("alice", S(200)),
        user_b=S(200),
        padmin_b=S(200),
        agent_b=S(200),
        params={"model": "NVIDIA H100 80GB HBM3"},
    ),
    ("GET", "/v1/network"): OWN_LIST,
    ("GET", "/v1/network/estimate"): Rule(
        owner=("alice", S(200)),
        user_b=S(200),
        padmin_b=S(200),
        agent_b=S(200, 403),
        params={"src": "hub", "dst": "region:44", "bytes": 1000},
    ),
    ("GET", "/v1/network/probe"): Rule(
        owner=("agent_a", S(200)), user_b=S(200, 403), padmin_b=S(200, 403), agent_b=S(200)
    ),
    ("GET", "/v1/whoami"): OWN_LIST,
    # The dashboard: sites and pools for all (discovery), task counts of the caller's own
    # organisation; the stream is the same, as events (one here: count=1).
    ("GET", "/v1/dashboard"): OWN_LIST,
    ("GET", "/v1/dashboard/stream"): Rule(
        owner=("alice", S(200)),
        user_b=S(200),
        padmin_b=S(200),
        agent_b=S(200, 403),
        params={"count": 1},
    ),
    # The operator's metrics: an admin's token (CPNET_METRICS_PUBLIC=1 opens them).
    ("GET", "/metrics"): ADMIN_ONLY,
    # SLA terms, their evaluations and reputations are part of what discovery shows.
    ("GET", "/v1/pools/{pool_id}/sla"): Rule(
        owner=("alice", S(200)), user_b=S(200), padmin_b=S(200), agent_b=S(200)
    ),
    # 404 until the hub's first scoring of the pools (every 60 s)
    ("GET", "/v1/pools/{pool_id}/reputation"): Rule(
        owner=("alice", S(200, 404)), user_b=S(200, 404), padmin_b=S(200, 404), agent_b=S(200, 404)
    ),
    ("GET", "/v1/reputation"): OWN_LIST,
    ("PUT", "/v1/pools/{pool_id}/sla"): Rule(body={"availability": 0.5, "window_s": 3600}),
    # -- tasks (native and TES) -----------------------------------------------------------------
    ("GET", "/v1/tasks"): OWN_LIST,
    ("POST", "/v1/tasks"): Rule(user_b=S(201), padmin_b=S(201, 403), agent_b=S(403), body=TASK),
    ("POST", "/v1/tasks:batch"): Rule(
        user_b=S(200), padmin_b=S(200, 403), agent_b=S(403), body={"tasks": [TASK]}
    ),
    ("GET", "/v1/tasks/{task_id}"): Rule(owner=("alice", S(200))),
    ("GET", "/v1/tasks/{task_id}/events"): Rule(owner=("alice", S(200))),
    ("GET", "/v1/tasks/{task_id}/explain"): Rule(owner=("alice", S(200))),
    ("GET", "/v1/tasks/{task_id}/logs"): Rule(owner=("alice", S(200))),
    ("GET", "/v1/tasks/{task_id}/usage"): Rule(owner=("alice", S(200))),
    ("POST", "/v1/tasks/{task_id}/cancel"): Rule(),
    ("GET", "/ga4gh/tes/v1/tasks"): OWN_LIST,
    ("POST", "/ga4gh/tes/v1/tasks"): Rule(
        user_b=S(200),
        padmin_b=S(200, 403),
        agent_b=S(403),
        body={"executors": [{"image": "", "command": ["true"]}]},
    ),
    ("GET", "/ga4gh/tes/v1/tasks/{task_id}"): Rule(owner=("alice", S(200))),
    ("POST", "/ga4gh/tes/v1/tasks/{task_id}:cancel"): Rule(),
    # -- blobs ----------------------------------------------------------------------------------
    ("GET", "/v1/blobs/{sha256}"): Rule(owner=("alice", S(200))),
    ("PUT", "/v1/blobs"): Rule(user_b=OK, padmin_b=OK, agent_b=S(400), content=b"b's own\n"),
    ("POST", "/v1/blobs"): Rule(user_b=OK, padmin_b=OK, agent_b=S(400), content=b"b's own\n"),
    # -- quotes, auctions, leases -----------------------------------------------------------------
    # 409: no live pool just now (the pools' agents registered once and went quiet)
    ("POST", "/v1/quotes"): Rule(
        user_b=S(201, 409), padmin_b=S(201, 403, 409), agent_b=S(403), body=TASK
    ),
    ("GET", "/v1/quotes/{quote_id}"): Rule(owner=("alice", S(200))),
    ("GET", "/v1/auctions"): OWN_LIST,
    ("POST", "/v1/auctions"): Rule(
        user_b=S(201), padmin_b=S(201, 403), agent_b=S(403), body="{auction_body}"
    ),
    # An open request is a call for bids: other providers see it (bids stay sealed).
    ("GET", "/v1/auctions/{auction_id}"): Rule(owner=("alice", S(200)), padmin_b=S(200, 404)),
    ("POST", "/v1/auctions/{auction_id}/bids"): Rule(
        padmin_b=S(200, 201), body={"pool_id": "{pool_b}", "price": "1.00"}
    ),
    ("POST", "/v1/auctions/{auction_id}/close"): Rule(),
    ("GET", "/v1/leases"): OWN_LIST,
    ("DELETE", "/v1/leases/{lease_id}"): Rule(),
    # -- accounts and the ledger ----------------------------------------------------------------
    ("GET", "/v1/accounts/{org_id}"): Rule(owner=("alice", S(200))),
    ("GET", "/v1/accounts/{org_id}/bill"): Rule(
        owner=("alice", S(200)), params={"period": "2026-12"}
    ),
    ("POST", "/v1/accounts/{org_id}/topups"): Rule(
        user_b=S(403), padmin_b=S(403), agent_b=S(403), body={"amount": "1.00"}
    ),
    ("PUT", "/v1/accounts/{org_id}/limits"): Rule(
        user_b=S(403), padmin_b=S(403), agent_b=S(403), body={"credit_limit": "1.00"}
    ),
    # organisation quotas (docs/security.md, "Limits"): its members read them, admins set them
    ("GET", "/v1/accounts/{org_id}/quota"): Rule(owner=("alice", S(200))),
    ("PUT", "/v1/accounts/{org_id}/quota"): Rule(
        user_b=S(403), padmin_b=S(403), agent_b=S(403), body={"queued": 1}
    ),
    ("GET", "/v1/ledger/check"): ADMIN_ONLY,
    # -- the audit chain: an organisation's records for its provider admins, all for admins ----
    ("GET", "/v1/audit"): Rule(
        owner=("padmin_a", S(200)),
        user_b=S(403),
        padmin_b=S(404),
        agent_b=S(403),
        params={"org": "{org_a}"},
    ),
    ("GET", "/v1/audit/verify"): ADMIN_ONLY,
    ("POST", "/v1/ledger/transfers"): Rule(
        user_b=S(403),
        padmin_b=S(403),
        agent_b=S(403),
        body={
            "id": "matrix-1",
            "kind": "adjust",
            "amount": "1.00",
            "debit": "org:{org_a}",
            "credit": "org:{org_b}",
        },
    ),
    # -- organisations, users, tokens -----------------------------------------------------------
    ("GET", "/v1/orgs"): Rule(
        owner=("admin", S(200)), user_b=S(200, 403), padmin_b=S(200, 403), agent_b=S(200, 403)
    ),
    ("POST", "/v1/orgs"): Rule(user_b=S(403), padmin_b=S(403), agent_b=S(403), body={"name": "x"}),
    ("POST", "/v1/users"): Rule(
        user_b=S(403),
        padmin_b=S(403),
        agent_b=S(403),
        body={"org_id": "{org_a}", "name": "mallory", "role": "admin"},
    ),
    ("GET", "/v1/tokens"): OWN_LIST,
    ("POST", "/v1/tokens"): Rule(user_b=S(201), padmin_b=S(201), agent_b=S(403, 404), body={}),
    ("DELETE", "/v1/tokens/{token_id}"): Rule(),
    # -- providers, sites, pools (their provider's admins) ----------------------------------------
    ("POST", "/v1/providers"): Rule(
        user_b=S(403), padmin_b=S(200, 201), agent_b=S(403), body={"name": "b-two"}
    ),
    ("GET", "/v1/sites"): OWN_LIST,
    ("POST", "/v1/sites"): Rule(
        body={"provider_id": "{provider_a}", "name": "intruder", "region_code": "440300"}
    ),
    ("GET", "/v1/sites/{site_id}"): Rule(owner=("padmin_a", S(200))),
    ("POST", "/v1/sites/{site_id}/tokens"): Rule(body={"name": "intruder"}),
    ("GET", "/v1/sites/{site_id}/certificates"): Rule(owner=("padmin_a", S(200))),
    ("POST", "/v1/sites/{site_id}/certificates/revoke"): Rule(),
    ("GET", "/v1/sites/{site_id}/usage"): Rule(owner=("padmin_a", S(200))),
    ("DELETE", "/v1/pools/{pool_id}"): Rule(),
    ("POST", "/v1/pools/{pool_id}/measure"): Rule(),
    ("POST", "/v1/pools/{pool_id}/prices"): Rule(body={"entries": [{"cpu_core_hour": 0.01}]}),
    ("GET", "/v1/pools/{pool_id}/bid-rule"): Rule(owner=("padmin_a", S(200, 404))),
    ("PUT", "/v1/pools/{pool_id}/bid-rule"): Rule(body={"factor": 0.5}),
    ("DELETE", "/v1/pools/{pool_id}/bid-rule"): Rule(),
    ("PUT", "/v1/network/links"): Rule(
        user_b=S(403),
        padmin_b=S(403),
        agent_b=S(403),
        body={"a": "region:44", "b": "region:11", "rtt_ms": 1},
    ),
    ("DELETE", "/v1/network/links"): Rule(
        user_b=S(403), padmin_b=S(403), agent_b=S(403), params={"a": "region:44", "b": "region:11"}
    ),
    # -- the agent API: only the site's own agent ------------------------------------------------
    ("POST", "/v1/sites/{site_id}/register"): Rule(body=REGISTER),
    ("POST", "/v1/sites/{site_id}/heartbeat"): Rule(body=HEARTBEAT),
    ("GET", "/v1/sites/{site_id}/assignments"): Rule(owner=("agent_a", S(200)), params={"wait": 0}),
    ("POST", "/v1/sites/{site_id}/updates"): Rule(body={"updates": []}),
    ("POST", "/v1/sites/{site_id}/measurements"): Rule(body="{measurement_body}"),
    ("POST", "/v1/sites/{site_id}/network/samples"): Rule(body={"samples": []}),
    ("POST", "/v1/sites/{site_id}/usage"): Rule(body="{usage_body}"),
    ("GET", "/v1/sites/{site_id}/attempts/{attempt_id}/secrets"): Rule(),
    ("POST", "/v1/agents/certificate"): Rule(
        user_b=S(403), padmin_b=S(403), agent_b=S(400, 201), body={"csr": "not a csr"}
    ),
}


@dataclass
class Setup:
    hub: HubProc
    world: World
    tokens: dict[str, str]
    ids: dict[str, str]
    sentinels: list[str]  # owner's data no one else's answer may hold
    secrets: list[str]  # what no answer at all may hold

    def client(self, actor: str) -> httpx.Client:
        headers = {} if actor == "anon" else {"authorization": f"Bearer {self.tokens[actor]}"}
        return httpx.Client(base_url=self.hub.url, headers=headers, timeout=30)


def _fill(value: object, ids: dict[str, str]) -> object:
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
            return ids[value[1:-1]]  # a whole body, or an id
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Organisation A (alice, its provider admin, site a with a pool, a task with a secret env
    value, a blob, a quote, an auction) and organisation B (bob, its provider admin, site b with a
    pool and its agent); a revoked token of A."""
    hub = HubProc(tmp_path_factory.mktemp("authz") / "hub", free_port())
    hub.data_dir.mkdir()
    hub.init()
    hub.start()
    try:
        a = make_world(hub, {"a": ("general", "440100")}, org="acme")
        b = make_world(hub, {"b": ("general", "440300")}, org="rival")
        pools = {}
        for w, name in ((a, "a"), (b, "b")):
            r = httpx.post(
                f"{hub.url}/v1/sites/{w.site_ids[name]}/register",
                headers={"authorization": f"Bearer {w.site_tokens[name]}"},
                json={"pools": [{"name": "cpu", "hardware": {"cpu_cores": 8, "memory_gb": 32}}]},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            pools[name] = r.json()["pools"]["cpu"]
        alice = hub.client(a.user_token)
        task = alice.submit(
            {
                "name": "acme-private-task-name",
                "executors": [{"command": ["true"], "env": {"K": SECRET_ENV}, "secret_env": ["K"]}],
            }
        )
        blob = alice.put_blob(b"acme's private data\n")
        sha = blob.rsplit("/", 1)[-1]
        quote = alice.quote(TASK)
        later = datetime.now(UTC) + timedelta(hours=1)
        auction = alice.create_auction(
            start=later,
            end=later + timedelta(hours=1),
            max_price="10.00",
            resources={"cpu_cores": 1},
        )
        with hub.client() as admin:
            _, spare = admin.create_user(a.org_id, "alice2", role="user")
        revoked = spare.token
        with hub.client(revoked) as c:
            mine = c._request("GET", "/v1/tokens")["tokens"]  # type: ignore[index]
        with hub.client() as admin:
            admin._request("DELETE", f"/v1/tokens/{mine[0]['id']}")
        with hub.client(a.user_token) as c:
            alice_token_id = c._request("GET", "/v1/tokens")["tokens"][0]["id"]  # type: ignore[index]
        start = later.isoformat()
        ids = {
            "task_id": task.id,
            "pool_id": pools["a"],
            "pool_b": pools["b"],
            "site_id": a.site_ids["a"],
            "org_id": a.org_id,
            "org_a": a.org_id,
            "org_b": b.org_id,
            "provider_a": a.provider_id,
            "identifier": a.provider_id,
            "sha256": sha,
            "quote_id": quote.id,
            "auction_id": auction.id,
            "lease_id": "lse_nope",
            "attempt_id": "att_nope",
            "token_id": alice_token_id,
        }
        bodies = {
            "auction_body": {
                "resources": {"cpu_cores": 1},
                "start": start,
                "end": (later + timedelta(hours=1)).isoformat(),
                "max_price": "5.00",
            },
            "measurement_body": {"pools": [{"name": "cpu", "probe": {}}]},
            "usage_body": {"record": {}, "signature": {}},
        }
        ids.update({k: v for k, v in bodies.items()})  # type: ignore[misc]
        tokens = {
            "alice": a.user_token,
            "padmin_a": a.padmin_token,
            "agent_a": a.site_tokens["a"],
            "admin": hub.admin_token,
            "user_b": b.user_token,
            "padmin_b": b.padmin_token,
            "agent_b": b.site_tokens["b"],
            "revoked": revoked,
        }
        sentinels = [task.id, "acme-private-task-name", sha, quote.id, alice_token_id]
        secret_values = [SECRET_ENV, a.user_token, a.padmin_token, hub.admin_token, revoked]
        secret_values += [b.user_token, a.site_tokens["a"], "PRIVATE KEY"]
        secret_values += [hashlib.sha256(t.encode()).hexdigest() for t in tokens.values()]
        yield Setup(hub, a, tokens, ids, sentinels, secret_values)
    finally:
        hub.kill()


ROUTES = app_routes()


def test_every_route_has_an_entry():
    missing = [f"{m} {p}" for m, p in ROUTES if (m, p) not in TABLE]
    assert not missing, f"routes without an entry in the authorisation matrix: {missing}"
    stale = [f"{m} {p}" for m, p in TABLE if (m, p) not in ROUTES]
    assert not stale, f"entries for routes that no longer exist: {stale}"


def _call(setup: Setup, actor: str, method: str, template: str, rule: Rule) -> httpx.Response:
    path = template.format(**setup.ids)
    kw: dict = {"params": _fill(rule.params, setup.ids)}
    if rule.content is not None:
        kw["content"] = rule.content
    elif rule.body is not None or method in ("POST", "PUT"):
        kw["json"] = _fill(rule.body if rule.body is not None else {}, setup.ids)
    with setup.client(actor) as c:
        return c.request(method, path, **kw)


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_the_matrix(setup: Setup, method: str, template: str):
    rule = TABLE.get((method, template))
    if rule is None:
        pytest.fail(f"no entry for {method} {template} (see test_every_route_has_an_entry)")
    seen = []
    for actor in ACTORS:
        if actor == "owner":
            if rule.owner is None or method != "GET":
                continue
            who, allowed = rule.owner
        elif actor in ("revoked", "anon"):
            who = actor
            allowed = rule.public_answers | S(401) if rule.public and actor == "revoked" else S(401)
            if rule.public and actor == "anon":
                allowed = rule.public_answers
        else:
            who, allowed = actor, getattr(rule, actor)
        r = _call(setup, who, method, template, rule)
        seen.append((actor, r.status_code))
        assert r.status_code != 500, f"{who}: {r.text[:300]}"
        assert r.status_code in allowed, (
            f"{method} {template} as {who}: {r.status_code} not in {sorted(allowed)}: "
            f"{r.text[:300]}"
        )
        for s in setup.secrets:
            assert s not in r.text, f"{method} {template} as {who}: the answer holds a secret"
        if actor != "owner":
            # An id the caller sent may come back in a 404's message; anything else may not.
            for s in (s for s in setup.sentinels if s not in r.request.url.path):
                assert s not in r.text, (
                    f"{method} {template} as {who}: the answer holds the owner's data ({s})"
                )
