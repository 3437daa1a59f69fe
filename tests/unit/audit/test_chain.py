"""The audit chain's rules (cpnet.audit.chain): hashing, checkpoints, and that verification
catches any single edit, deletion, swap or insertion in a random chain, naming the record."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from cpnet.audit import chain
from cpnet.audit.chain import GENESIS, Actor, Entry
from cpnet.ident import SigningKey

KEY = SigningKey.generate()
KEYS = {KEY.key_id: KEY.public_key_b64}

actors = st.builds(
    Actor,
    role=st.sampled_from(["admin", "provider-admin", "user", "agent", "hub"]),
    org_id=st.none() | st.text("abcxyz_", min_size=1, max_size=8),
    user_id=st.none() | st.text("uvw", min_size=1, max_size=4),
    token_id=st.none() | st.text("tok", min_size=1, max_size=4),
)
entries = st.builds(
    Entry,
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    action=st.sampled_from(["POST /v1/tasks", "task.placed", "token.issued", "ledger.transfer"]),
    actor=actors,
    org_id=st.none() | st.sampled_from(["org_a", "org_b"]),
    object_id=st.none() | st.text(min_size=1, max_size=12),
    status=st.none() | st.sampled_from([200, 201, 404]),
    detail=st.dictionaries(st.sampled_from(["n", "pool", "amount"]), st.integers(0, 10**9)),
)
chains = st.lists(entries, min_size=1, max_size=12).map(lambda es: chain.extend(0, GENESIS, es))


def test_an_intact_chain_verifies_with_its_checkpoint_and_head():
    recs = chain.extend(0, GENESIS, [Entry(at=1.0, action="a", actor=chain.HUB)] * 3)
    assert [r.seq for r in recs] == [1, 2, 3]
    assert recs[0].prev_hash == GENESIS and recs[1].prev_hash == recs[0].hash
    cp = chain.sign_head(3, recs[-1].hash, 5.0, KEY)
    assert chain.verify(recs, [cp], KEYS, head=(3, recs[-1].hash)) == []


def test_the_hash_covers_every_field():
    e = Entry(at=1.0, action="a", actor=chain.HUB, detail={"x": 1})
    h = chain.link_hash(1, GENESIS, e)
    assert chain.link_hash(1, GENESIS, replace(e, detail={"x": 2})) != h
    assert chain.link_hash(1, GENESIS, replace(e, actor=Actor("user"))) != h
    assert chain.link_hash(2, GENESIS, e) != h
    assert chain.link_hash(1, "1" * 64, e) != h


@given(chains, st.data())
def test_any_edit_is_caught_at_that_record(recs, data):
    i = data.draw(st.integers(0, len(recs) - 1))
    r = recs[i]
    new = data.draw(st.text(min_size=1, max_size=12).filter(lambda t: t != r.entry.object_id))
    tampered = [*recs[:i], replace(r, entry=replace(r.entry, object_id=new)), *recs[i + 1 :]]
    problems = chain.verify(tampered)
    assert problems and problems[0].seq == r.seq and problems[0].kind == "edited"


@given(chains, st.data())
def test_any_deletion_is_caught(recs, data):
    i = data.draw(st.integers(0, len(recs) - 1))
    cut = recs[:i] + recs[i + 1 :]
    last = recs[-1]
    # deleting the last record is caught by the head (or a checkpoint) the store keeps
    problems = chain.verify(cut, head=(last.seq, last.hash))
    assert problems
    if i < len(recs) - 1:
        assert problems[0].seq == recs[i].seq and problems[0].kind == "missing"


@given(chains.filter(lambda rs: len(rs) >= 2), st.data())
def test_any_swap_of_two_records_is_caught(recs, data):
    i = data.draw(st.integers(0, len(recs) - 2))
    j = data.draw(st.integers(i + 1, len(recs) - 1))
    swapped = list(recs)
    swapped[i], swapped[j] = recs[j], recs[i]
    problems = chain.verify(swapped)
    assert problems and problems[0].seq in (recs[i].seq, recs[j].seq)
    # the same swap of the rows' contents under the original seqs (an edit in SQL)
    contents = list(recs)
    contents[i] = replace(recs[i], entry=recs[j].entry)
    contents[j] = replace(recs[j], entry=recs[i].entry)
    if recs[i].entry != recs[j].entry:
        assert chain.verify(contents)[0].seq == recs[i].seq


@given(chains, entries, st.data())
def test_any_insertion_is_caught(recs, extra, data):
    i = data.draw(st.integers(0, len(recs)))
    seq = data.draw(st.integers(1, len(recs) + 1))
    prev = data.draw(st.sampled_from([GENESIS] + [r.hash for r in recs]))
    forged = chain.Record(seq, prev, chain.link_hash(seq, prev, extra), extra)
    inserted = [*recs[:i], forged, *recs[i:]]
    last = recs[-1]
    assert chain.verify(inserted, head=(last.seq, last.hash))


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint():
    recs = chain.extend(
        0, GENESIS, [Entry(at=float(n), action="a", actor=chain.HUB) for n in range(5)]
    )
    cp = chain.sign_head(3, recs[2].hash, 9.0, KEY)
    # an attacker edits record 2 and recomputes every hash after it: links hold, checkpoint not
    forged = chain.extend(
        1, recs[0].hash, [replace(recs[1].entry, action="b")] + [r.entry for r in recs[2:]]
    )
    rewritten = [recs[0], *forged]
    assert chain.verify(rewritten) == []
    problems = chain.verify(rewritten, [cp], KEYS)
    assert [(p.seq, p.kind) for p in problems] == [(3, "checkpoint")]


def test_a_truncated_tail_is_caught_by_a_checkpoint_past_it():
    recs = chain.extend(0, GENESIS, [Entry(at=1.0, action="a", actor=chain.HUB)] * 4)
    cp = chain.sign_head(4, recs[3].hash, 9.0, KEY)
    problems = chain.verify(recs[:2], [cp], KEYS)
    assert [(p.seq, p.kind) for p in problems] == [(4, "truncated")]


def test_a_forged_or_unknown_checkpoint_is_refused():
    recs = chain.extend(0, GENESIS, [Entry(at=1.0, action="a", actor=chain.HUB)])
    cp = chain.sign_head(1, recs[0].hash, 9.0, KEY)
    assert chain.verify(recs, [replace(cp, at=10.0)], KEYS)[0].message.endswith("bad signature")
    other = SigningKey.generate()
    assert (
        "unknown key"
        in chain.verify(recs, [chain.sign_head(1, recs[0].hash, 9.0, other)], KEYS)[0].message
    )


def test_the_hashed_body_has_every_field_of_an_entry_and_its_actor():
    from dataclasses import fields

    body = chain.body_of(1, GENESIS, Entry(at=1.0, action="a", actor=chain.HUB))
    assert set(body) == {"seq", "prev_hash"} | {f.name for f in fields(Entry)}
    assert set(body["actor"]) == {f.name for f in fields(Actor)}
