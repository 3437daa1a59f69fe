"""cpnet.audit.canonical writes exactly the bytes rfc8785 writes (the audit chain's hashes and
usage records' signatures depend on it), or raises what rfc8785 raises."""

from __future__ import annotations

import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.audit.canonical import canonical_json

LIMIT = 2**53 - 1

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e22, max_value=1e22),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.integers(-(2**60), 2**60).map(float),
    st.sampled_from([0.0, -0.0, 1e16, 1e21, 1e-7, 1e-6, 5e-5, 1796683068.3824337, 100.0]),
)
ints = st.one_of(st.integers(-LIMIT, LIMIT), st.integers(-(2**64), 2**64))
texts = st.text(st.characters(codec=None))  # surrogates, controls, astral characters included
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
keys = st.one_of(st.text(max_size=8), st.sampled_from(["a", "b", "\ue000", "\U0001f600", "é"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=20,
)


def _rfc(obj: object) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(obj)  # type: ignore[arg-type]
    except Exception as exc:
        return type(exc)


@settings(max_examples=2000, deadline=None)
@given(values)
def test_the_same_bytes_as_rfc8785_or_the_same_error(obj: object) -> None:
    want = _rfc(obj)
    if isinstance(want, bytes):
        assert canonical_json(obj) == want
    else:
        with pytest.raises(want):
            canonical_json(obj)


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        ({"b": 5.0, "a": -0.0}, '{"a":0,"b":5}'),
        ({"at": 1796683068.3824337}, '{"at":1796683068.3824337}'),
        ([1e21, 1e-7, 1e16, 123.5], "[1e+21,1e-7,10000000000000000,123.5]"),
        ({"\U0001f600": 1, "\ue000": 2}, '{"\U0001f600":1,"\ue000":2}'),  # UTF-16 order
        ({"s": 'q"\\\n\x01é'}, '{"s":"q\\"\\\\\\n\\u0001é"}'),
    ],
)
def test_known_values(obj: object, text: str) -> None:
    assert canonical_json(obj) == text.encode()
    assert rfc8785.dumps(obj) == text.encode()  # type: ignore[arg-type]


def test_what_rfc8785_refuses_is_refused() -> None:
    for bad in (math.nan, math.inf, 2**53, {1: "a"}, "\ud800", object()):
        with pytest.raises(ValueError):
            canonical_json(bad)
