"""Tests for compute identifiers: grammar, check character, labels."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.ident import (
    ComputeId,
    IdentifierError,
    IdType,
    check_character,
    is_valid,
    make,
    parse,
    slug_label,
    unique_label,
)

ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz"
# Every character that may appear anywhere in a canonical identifier.
ALPHABET = ALNUM + ".~"
CODES = {
    "too_long",
    "bad_character",
    "bad_label",
    "too_few_labels",
    "too_many_labels",
    "bad_type",
    "bad_check",
    "empty",
}


@st.composite
def compute_ids(draw) -> ComputeId:
    """Generate any valid identifier, long ones included, within the 128-character bound."""
    n = draw(st.integers(2, 8))
    # Budget for label characters: 128 minus the dots between labels and ".t" + check.
    budget = 128 - (n - 1) - 3
    labels = []
    for i in range(n):
        room = min(24, budget - (n - i - 1))
        label = draw(st.text(ALNUM, min_size=1, max_size=room))
        budget -= len(label)
        labels.append(label)
    return make(labels, draw(st.sampled_from(list(IdType))))


def rejection(text: str) -> IdentifierError:
    """Parse text that must be rejected and return the error."""
    with pytest.raises(IdentifierError) as info:
        parse(text)
    return info.value


# --- known vectors -------------------------------------------------------------------------------
#
# Hand computation for "cn.gd.x": values c=12 n=23 .=36 g=16 d=13 x=33; recursion P=(P+v)*2 mod 37
#   c: (0+12)*2=24      n: (24+23)*2=94→20   .: (20+36)*2=112→1   g: (1+16)*2=34
#   d: (34+13)*2=94→20  .: (20+36)*2=112→1   x: (1+33)*2=68→31
#   check = (38 - 31) mod 37 = 7, and indeed (31 + 7) mod 37 = 1.  →  cn.gd.x7
# ISO/IEC 7064's own MOD 37-2 example: G123489654321 → Y (lowercase here).


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ("cn.gd.x", "7"),
        ("g123489654321", "y"),
        ("G123489654321", "y"),
        ("cn.gd.acme.x", "f"),
        ("cn.gd.acme.sz1.i", "7"),
        ("cn.gd.acme.sz1.gpu1.i", "0"),
        ("cn.gd.acme.sz1.gpu14.i", "~"),
    ],
)
def test_known_check_characters(body: str, check: str) -> None:
    assert check_character(body) == check


def test_check_character_rejects_foreign_characters() -> None:
    with pytest.raises(IdentifierError) as info:
        check_character("cn.g_d.x")
    assert info.value.code == "bad_character"
    assert "'_'" in info.value.message and "position 5" in info.value.message


def test_tilde_check_round_trips() -> None:
    cid = parse("cn.gd.acme.sz1.gpu14.i~")
    assert cid.check == "~"
    assert cid.text == "cn.gd.acme.sz1.gpu14.i~"
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", cid.text)  # RFC 3986 unreserved only


# --- structure and API ---------------------------------------------------------------------------


def test_compute_id_parts() -> None:
    cid = make(["cn", "gd", "acme", "sz1", "gpu1"], IdType.INTELLIGENT)
    assert cid.labels == ("cn", "gd", "acme", "sz1", "gpu1")
    assert cid.type is IdType.INTELLIGENT
    assert cid.text == str(cid) == "cn.gd.acme.sz1.gpu1.i0"
    assert cid.path == "cn.gd.acme.sz1.gpu1"
    assert cid.parent_path == "cn.gd.acme.sz1"
    assert parse(cid.text) == cid
    assert hash(parse(cid.text)) == hash(cid)


def test_make_accepts_a_dotted_path_type_names_and_any_case() -> None:
    expected = make(["cn", "gd", "acme", "sz1"], IdType.INTELLIGENT)
    assert make("cn.gd.acme.sz1", "i") == expected
    assert make("CN.GD.Acme.SZ1", "intelligent") == expected
    assert make(("cn", "gd", "ACME", "sz1"), "Intelligent") == expected


def test_is_under() -> None:
    cid = parse("cn.gd.acme.sz1.gpu1.i0")
    assert cid.is_under("cn")
    assert cid.is_under("cn.gd")
    assert cid.is_under("CN.GD.acme")
    assert cid.is_under("cn.gd.acme.sz1.gpu1")  # an id is inside its own path
    assert not cid.is_under("cn.gdx")  # label boundaries, not string prefixes
    assert not cid.is_under("cn.dev")
    assert not cid.is_under("cn.gd.acme.sz1.gpu1.more")
    with pytest.raises(IdentifierError):
        cid.is_under("cn..gd")


def test_direct_construction_is_validated() -> None:
    assert ComputeId(("CN", "gd"), "x", "7") == parse("cn.gd.x7")
    with pytest.raises(IdentifierError) as info:
        ComputeId(("cn", "gd"), IdType.NONE, "8")
    assert info.value.code == "bad_check"
    with pytest.raises(IdentifierError) as info:
        ComputeId(("cn", "g-d"), IdType.NONE, "7")
    assert info.value.code == "bad_label"
    with pytest.raises(IdentifierError) as info:
        ComputeId(("cn", "gd"), "q", "7")
    assert info.value.code == "bad_type"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("general", IdType.GENERAL),
        ("intelligent", IdType.INTELLIGENT),
        ("supercomputing", IdType.SUPERCOMPUTING),
        ("edge", IdType.EDGE),
        (" Edge ", IdType.EDGE),
        ("g", IdType.GENERAL),
        ("I", IdType.INTELLIGENT),
        ("s", IdType.SUPERCOMPUTING),
        ("e", IdType.EDGE),
        ("x", IdType.NONE),
        (IdType.EDGE, IdType.EDGE),
    ],
)
def test_from_pool_type(name: str, expected: IdType) -> None:
    assert IdType.from_pool_type(name) is expected


def test_from_pool_type_rejects_unknown() -> None:
    with pytest.raises(IdentifierError) as info:
        IdType.from_pool_type("quantum")
    assert info.value.code == "bad_type"
    assert isinstance(info.value, ValueError)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("", "empty", "empty"),
        ("   ", "empty", "empty"),
        ("cn.gd.x8", "bad_check", "check character is '8', expected '7'"),
        ("cn.gd.acme.sz1.gpu1.i1", "bad_check", "check character is '1', expected '0'"),
        ("cn.g_d.x7", "bad_character", "'_' at position 5"),
        ("cn.gd.x 7", "bad_character", "' ' at position 8"),
        ("cn.gé.x7", "bad_character", "'é' at position 5"),
        ("cn.g~d.x7", "bad_character", "'~' at position 5"),
        ("cn.\u212a.x7", "bad_character", "position 4"),  # KELVIN SIGN lowercases to "k"
        ("cn..gd.x7", "bad_label", "label 2 '' is empty"),
        ("cn." + "a" * 25 + ".x7", "bad_label", "25 characters"),
        ("cn.x7", "too_few_labels", "at least 2"),
        (".".join("abcdefghi") + ".x7", "too_many_labels", "at most 8"),
        ("cn.gd.q7", "bad_type", "'q'"),
        ("cn.gd.acme", "bad_type", "ends with 'acme'"),
        ("cn.gd.x", "bad_type", "ends with 'x'"),
        ("cngdx7", "bad_type", "type code"),
        ("cn.gd.x.", "bad_type", "ends with ''"),
        ("a" * 129, "too_long", "129 characters"),
    ],
)
def test_errors_say_what_is_wrong(text: str, code: str, fragment: str) -> None:
    err = rejection(text)
    assert err.code == code
    assert fragment in err.message
    assert str(err) == err.message
    assert not is_valid(text)


def test_bad_check_message_is_exact() -> None:
    assert rejection("cn.gd.x8").message == "check character is '8', expected '7'"


def test_parse_rejects_non_strings() -> None:
    assert not is_valid(None)  # type: ignore[arg-type]


@given(st.text(max_size=140))
def test_any_text_parses_or_raises_identifier_error(text: str) -> None:
    try:
        cid = parse(text)
    except IdentifierError as err:
        assert err.code in CODES
        assert err.message
        assert not is_valid(text)
    else:
        assert is_valid(text)
        assert cid.text == text.strip().lower()


@given(st.text(ALPHABET + "ABCXYZ", max_size=60))
def test_near_miss_text_parses_or_raises_identifier_error(text: str) -> None:
    # Text over the identifier alphabet reaches the deeper branches of the diagnosis.
    try:
        parse(text)
    except IdentifierError as err:
        assert err.code in CODES


# --- length bound --------------------------------------------------------------------------------


def test_length_bound() -> None:
    # 6 labels of 20 + 5 dots + ".i" + check = 128.
    longest = make(["a" * 20] * 6, "i")
    assert len(longest.text) == 128
    assert parse(longest.text) == longest
    with pytest.raises(IdentifierError) as info:
        make(["a" * 21] + ["a" * 20] * 5, "i")
    assert info.value.code == "too_long"
    body = "a" * 21 + ".aaaaaaaaaaaaaaaaaaaa" * 5 + ".i"
    err = rejection(body + check_character(body))
    assert err.code == "too_long"


@given(compute_ids())
def test_generated_ids_respect_length(cid: ComputeId) -> None:
    assert len(cid.text) <= 128


# --- round trip and case -------------------------------------------------------------------------


@given(compute_ids())
def test_round_trip(cid: ComputeId) -> None:
    again = parse(cid.text)
    assert again == cid
    assert again.text == cid.text
    assert make(cid.labels, cid.type) == cid
    assert parse(f"  {cid.text}\n") == cid


@given(compute_ids(), st.data())
def test_case_insensitive(cid: ComputeId, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(cid.text), max_size=len(cid.text)))
    mixed = "".join(c.upper() if f else c for c, f in zip(cid.text, flips, strict=True))
    assert parse(mixed) == cid
    assert parse(mixed).text == cid.text
    assert parse(cid.text.upper()) == cid


# --- error detection: the reason for MOD 37-2 ----------------------------------------------------


@given(compute_ids())
def test_every_single_substitution_is_rejected(cid: ComputeId) -> None:
    text = cid.text
    for i, original in enumerate(text):
        for c in ALPHABET:
            if c == original:
                continue
            mutated = text[:i] + c + text[i + 1 :]
            assert not is_valid(mutated), (text, mutated)


@given(compute_ids())
def test_every_adjacent_transposition_is_rejected(cid: ComputeId) -> None:
    text = cid.text
    for i in range(len(text) - 1):
        a, b = text[i], text[i + 1]
        if a == b:
            continue
        mutated = text[:i] + b + a + text[i + 2 :]
        assert not is_valid(mutated), (text, mutated)


@given(compute_ids(), st.data())
def test_grammatical_corruptions_fail_on_the_check(cid: ComputeId, data: st.DataObject) -> None:
    # A substitution inside a label keeps the grammar intact, so only the check can catch it.
    label_index = data.draw(st.integers(0, len(cid.labels) - 1))
    label = cid.labels[label_index]
    pos = data.draw(st.integers(0, len(label) - 1))
    c = data.draw(st.sampled_from([x for x in ALNUM if x != label[pos]]))
    labels = list(cid.labels)
    labels[label_index] = label[:pos] + c + label[pos + 1 :]
    mutated = ".".join(labels) + "." + cid.type.value + cid.check
    err = rejection(mutated)
    assert err.code == "bad_check"
    assert f"expected {check_character(mutated[:-1])!r}" in err.message


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("ACME Cloud (Shenzhen)-1", "acmecloudshenzhen1"),
        ("sz-1", "sz1"),
        ("GPU_Pool.A100", "gpupoola100"),
        ("Ünïcödé Cloud", "ncdcloud"),
        ("K\u212a", "k"),  # KELVIN SIGN is not transliterated to "k"
        ("a" * 30, "a" * 24),
    ],
)
def test_slug_label(name: str, label: str) -> None:
    assert slug_label(name) == label


@pytest.mark.parametrize("name", ["深圳算力中心", "", "---", "Ωμέγα"])
def test_slug_label_falls_back_to_a_stable_digest(name: str) -> None:
    label = slug_label(name)
    assert label == "n" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    assert slug_label(name) == label


@given(st.text(max_size=80))
def test_slug_label_always_gives_a_usable_label(name: str) -> None:
    label = slug_label(name)
    assert re.fullmatch(r"[a-z0-9]{1,24}", label)
    assert is_valid(str(make(["cn", "dev", label], "x")))


def test_unique_label() -> None:
    assert unique_label("acme", []) == "acme"
    assert unique_label("acme", {"acme"}) == "acme2"
    assert unique_label("acme", {"acme", "ACME2", "acme3"}) == "acme4"
    assert unique_label("ACME", {"other"}) == "acme"
    base = "b" * 24
    assert unique_label(base, {base}) == "b" * 23 + "2"
    taken = {base} | {"b" * 23 + str(n) for n in range(2, 10)}
    assert unique_label(base, taken) == "b" * 22 + "10"
    with pytest.raises(IdentifierError):
        unique_label("not ok", [])


@given(st.text(ALNUM, min_size=1, max_size=24), st.sets(st.text(ALNUM, min_size=1, max_size=24)))
def test_unique_label_is_valid_and_free(base: str, taken: set[str]) -> None:
    label = unique_label(base, taken)
    assert label not in taken
    assert re.fullmatch(r"[a-z0-9]{1,24}", label)
