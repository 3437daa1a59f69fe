"""canonical_json's fast path (the C json encoder) gives rfc8785's bytes, or rfc8785's error."""

from __future__ import annotations

import enum
import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.crypto.canonical import canonical_json

# Strings with every awkward kind of character: controls, quotes, backslashes, DEL, non-ASCII,
# astral code points and lone surrogates (neither encoder may let those through).
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\b", "\f", "\u2028", "\ud800"]),
        st.characters(min_codepoint=0xE000, max_codepoint=0x10FFFF),
    ),
    max_size=12,
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 64.0, 1e16, 1e21, 1e-7, 1e-4, 0.1, 2.0**53, 2.0**53 + 2, 5e-324]),
    st.sampled_from([2**53 - 1, 2**53, -(2**53) + 1, -(2**53)]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(TEXT, inner, max_size=4),
    ),
    max_leaves=20,
)


def reference(obj: object) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(obj)
    except ValueError:
        return ValueError


def ours(obj: object) -> bytes | type[Exception]:
    try:
        return canonical_json(obj)
    except ValueError:
        return ValueError


@settings(max_examples=1500)
@given(VALUES)
def test_the_same_bytes_or_the_same_refusal_as_rfc8785(obj: object) -> None:
    assert ours(obj) == reference(obj)


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "obj",
    [
        {"b": 1, "a": [64.0, 0.5, -0.0, 1e16, 1e-5, 123456789.125]},
        {"é": 1, "e": 2, "\U0001f600": 3, "\uff61": 4},  # UTF-16 order, not code point order
        {"x": Colour.RED, "y": Level.HIGH},  # subclasses: rfc8785's own path
        {"big": 2**53},
        {"nan": math.nan},
        {1: "not a string key"},
        {"set": {1, 2}},
    ],
)
def test_edge_values(obj: object) -> None:
    assert ours(obj) == reference(obj)


def test_a_record_takes_the_fast_path_and_keeps_its_floats_integral() -> None:
    record = {"capacity": {"total": {"cpu_cores": 64.0, "ram_gb": 0.5}}, "id": "cn.x", "n": None}
    assert canonical_json(record) == b'{"capacity":{"total":{"cpu_cores":64,"ram_gb":0.5}},' + (
        b'"id":"cn.x","n":null}'
    )


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
