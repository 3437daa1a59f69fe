"""Organisation quotas: which one a new task would pass, and the message naming it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cpnet.limits.quota import Quota, Usage, check


def test_each_quota_refuses_naming_itself_the_use_and_the_ask() -> None:
    q = Quota(queued=2, cores=8, gpus=1)
    assert check(q, Usage(1, 4, 0), cores=4, gpus=1) is None
    r = check(q, Usage(2, 0, 0), cores=1, gpus=0)
    assert r is not None and r.quota == "queued" and "queued tasks" in r.message
    r = check(q, Usage(0, 6, 0), cores=2.5, gpus=0)
    assert r is not None and (r.quota, r.used, r.asked, r.limit) == ("cores", 6, 2.5, 8)
    assert "6 in use + 2.5 asked > quota 8" in r.message and "cpnet account quota" in r.message
    r = check(q, Usage(0, 0, 1), cores=1, gpus=1)
    assert r is not None and r.quota == "gpus"
    # a task without GPUs is never refused by the GPU quota, even at or over it
    assert check(Quota(gpus=0), Usage(0, 0, 3), cores=1, gpus=0) is None
    assert check(Quota(), Usage(10**6, 10**6, 10**6), cores=10**3, gpus=10**3) is None


@given(
    limit=st.integers(0, 50),
    asks=st.lists(st.floats(0.1, 16).map(lambda x: round(x, 1)), max_size=60),
)
def test_admitting_one_by_one_never_passes_the_core_quota(limit: int, asks: list[float]) -> None:
    q, used = Quota(cores=limit), 0.0
    for ask in asks:
        if check(q, Usage(0, used, 0), cores=ask, gpus=0) is None:
            used += ask
    assert used <= limit + 1e-6
