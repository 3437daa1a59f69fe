"""Fuzzing the whole API (issue 14, item 7): schemathesis generates requests from the hub's own
OpenAPI document — every native and GA4GH TES operation — and sends them to a real hub process,
as an admin (the caller who reaches the deepest code) and as an ordinary user. The only check:
no answer is a server error. Bad input must get a 4xx naming the field, never a 500
(docs/security.md, "Fuzzing")."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from services import free_port
from tests.integration.procs import HubProc, make_world

pytestmark = pytest.mark.integration

# Examples per operation and caller: enough to reach every field's edge cases (the suite runs
# on a 2-core CI machine); CPNET_FUZZ_EXAMPLES raises it for a longer local run.
EXAMPLES = int(os.environ.get("CPNET_FUZZ_EXAMPLES", "12"))
# Streams that end only when the client leaves (with count=0, their default): a generated call
# would read until its timeout. Their parameters are checked in test_api_query and test_authz.
ENDLESS = frozenset({"/v1/dashboard/stream"})


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProc, dict]]:
    hub = HubProc(tmp_path_factory.mktemp("fuzz") / "hub", free_port())
    hub.data_dir.mkdir()
    hub.init()
    # A long poll must not hold a fuzzed request for a minute; rate limits must not turn the
    # fuzzer's burst into 429s that hide what the routes answer.
    hub.env.update({"CPNET_RATE_LIMIT": "off"})
    hub.start()
    world = make_world(hub, {"a": ("general", "440100")})
    tokens = {"admin": hub.admin_token, "user": world.user_token}
    try:
        yield hub, tokens
    finally:
        hub.kill()


@pytest.fixture(scope="module")
def api_schema(fuzz_hub):  # type: ignore[no-untyped-def]
    hub, _ = fuzz_hub
    return schemathesis.openapi.from_url(f"{hub.url}/openapi.json")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: a CI failure can be replayed
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)


def _fuzz(api_schema, token: str, who: str) -> None:  # type: ignore[no-untyped-def]
    """Every operation, EXAMPLES generated requests each; every server error is collected."""
    errors: list[str] = []
    codes: dict[int, int] = {}
    operations = 0
    for result in api_schema.get_all_operations():
        op = result.ok()
        operations += 1
        if op.path in ENDLESS:
            continue

        @FUZZ
        @given(case=op.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            r = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code >= 500:
                errors.append(
                    f"{case.method} {case.formatted_path} as {who} -> {r.status_code}: "
                    f"{r.text[:300]}\n  reproduce: {case.as_curl_command()}"
                )

        run()
    assert operations >= 50, operations
    # The fuzzer really called the hub, and got past validation to success as well as refusals.
    calls = sum(codes.values())
    ok = sum(n for c, n in codes.items() if c < 300)
    assert calls >= operations * 2 and ok > 0, codes
    print(f"{who}: {calls} requests over {operations} operations: {sorted(codes.items())}")
    assert not errors, f"{len(errors)} server errors:\n" + "\n".join(errors[:20])


def test_no_request_of_an_admin_makes_a_server_error(api_schema, fuzz_hub) -> None:  # type: ignore[no-untyped-def]
    _fuzz(api_schema, fuzz_hub[1]["admin"], "admin")


def test_no_request_of_a_user_makes_a_server_error(api_schema, fuzz_hub) -> None:  # type: ignore[no-untyped-def]
    _fuzz(api_schema, fuzz_hub[1]["user"], "user")


def test_the_schema_covers_native_and_tes(api_schema) -> None:  # type: ignore[no-untyped-def]
    paths = set(api_schema.raw_schema["paths"])
    assert "/v1/tasks" in paths and "/ga4gh/tes/v1/tasks" in paths, sorted(paths)
    assert len(paths) >= 50
