"""The scheduler's view of a stored spec matches the validated spec field by field."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cpnet.hub.scheduling import request_from_dict
from cpnet.tasks.model import TaskSpec

specs = st.fixed_dictionaries(
    {"executors": st.just([{"command": ["true"]}])},
    optional={
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "cpu_cores": st.floats(0.01, 64),
                "ram_gb": st.floats(0, 512),
                "disk_gb": st.floats(0, 100),
                "gpus": st.integers(0, 8),
                "gpu_model": st.sampled_from(["A800", "H100"]),
                "zones": st.lists(st.sampled_from(["44", "11"]), max_size=2),
            },
        ),
        "constraints": st.fixed_dictionaries(
            {},
            optional={
                "regions": st.lists(st.sampled_from(["44", "3101"]), max_size=2),
                "providers": st.lists(st.sampled_from(["cn.dev.A.xq"]), max_size=1),
                "pool_types": st.lists(st.sampled_from(["general", "edge"]), max_size=2),
                "labels": st.dictionaries(st.sampled_from(["tier", "os"]), st.just("x")),
                "deny_providers": st.lists(st.sampled_from(["cn.dev.B.xq"]), max_size=1),
                "latency": st.fixed_dictionaries(
                    {
                        "to": st.sampled_from(["region:440300", "hub"]),
                        "max_rtt_ms": st.floats(1, 99),
                    },
                    optional={"fallback_max_rtt_ms": st.floats(100, 999)},
                ),
                "deadline": st.sampled_from(["2026-12-07T08:00:00Z", "2026-12-07T10:00:00+08:00"]),
                "budget": st.floats(0, 1000),
                "spillover": st.just([["4403"], ["44"], [""]]),
            },
        ),
        "expected_runtime_s": st.floats(1, 10_000),
        "objective": st.sampled_from(["balanced", "fastest", "cheapest", "greenest"]),
        "inputs": st.lists(
            st.sampled_from(
                [
                    {"url": "https://data.example/a", "path": "/in/a", "size_bytes": 10},
                    {"url": "cpnet://blobs/" + "a" * 64, "path": "/in/b", "size_bytes": 20},
                    {"url": "s3://bucket/k", "path": "/in/c"},
                    {"content": "x", "path": "/in/d"},
                ]
            ),
            max_size=4,
        ),
    },
)


@given(specs)
def test_request_from_stored_dict_matches_the_model(raw: dict) -> None:
    spec = TaskSpec.model_validate(raw)
    stored = spec.model_dump(mode="json", exclude_none=True)  # what the store keeps
    now = 1_800_000_000.0
    req = request_from_dict("t", stored, ("p",), now)
    r, c = spec.resources, spec.constraints
    assert (req.demand.cpu_cores, req.demand.ram_gb, req.demand.disk_gb, req.demand.gpus) == (
        r.cpu_cores,
        r.ram_gb,
        r.disk_gb,
        r.gpus,
    )
    assert req.gpu_model == r.gpu_model
    assert req.regions == tuple(c.regions) + tuple(r.zones)
    assert req.providers == tuple(p.lower() for p in c.providers)
    assert req.pool_types == tuple(c.pool_types)
    assert req.labels == tuple(sorted(c.labels.items()))
    assert req.expected_runtime_s == spec.expected_runtime_s
    assert req.avoid_pools == ("p",)
    assert req.deny_providers == tuple(p.lower() for p in c.deny_providers)
    assert req.latency == ((c.latency.to, c.latency.max_rtt_ms) if c.latency else None)
    assert req.latency_fallback_ms == (c.latency.fallback_max_rtt_ms if c.latency else None)
    assert req.deadline_s == (c.deadline.timestamp() - now if c.deadline else None)
    assert req.budget == c.budget
    assert req.tiers == tuple(tuple(t) for t in c.spillover)
    assert req.objective == spec.objective
    places = {"https://data.example/a": "url:https://data.example", "cpnet://blobs/": "hub"}
    want = [
        (next(v for k, v in places.items() if i.url.startswith(k)), i.size_bytes)
        for i in spec.inputs
        if i.url and i.size_bytes is not None
    ]
    assert req.inputs == tuple(want)
