"""Signed usage records and the hub's judgement of them (cpnet.market.metering)."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.ident.keys import SigningKey
from cpnet.market import metering as M

SITE = "cn.dev.acme.site0"
KEY = SigningKey.generate()
OTHER = SigningKey.generate()  # another site's key
T0 = 1_800_000_000.0


def _record(**kw) -> dict:
    fields = dict(
        site_id=SITE,
        task_id="tsk_a",
        attempt_id="att_a",
        pool_id="cn.dev.acme.site0.cpu",
        started_at=T0 + 1.0,
        ended_at=T0 + 61.0,
        wall_s=58.25,
        demand={"cpu_cores": 2, "ram_gb": 4, "gpus": 0},
        cpu_s=100.0,
        scu_rates={"general": 1.5},
        profile="general",
        bytes_in=10,
        bytes_out=20,
    )
    fields.update(kw)
    return M.build(**fields)


def _seen(**kw) -> M.Observed:
    fields = dict(
        attempt_id="att_a",
        site_id=SITE,
        task_id="tsk_a",
        pool_id="cn.dev.acme.site0.cpu",
        created_at=T0,
        start_time=T0 + 1.0,
        end_time=T0 + 61.0,
    )
    fields.update(kw)
    return M.Observed(**fields)


def _judge(env, *, keys=None, observed="default", prior=None, received_at=T0 + 62.0):
    return M.judge(
        env,
        site_id=SITE,
        keys={KEY.key_id: KEY.public_key_b64} if keys is None else keys,
        observed=_seen() if observed == "default" else observed,
        prior=prior,
        received_at=received_at,
    )


ENV = M.sign(_record(), KEY)


def test_a_sound_record_is_accepted_with_its_figures() -> None:
    rec = ENV["record"]
    assert rec["record_id"] == "att_a/1" and rec["key_id"] == KEY.key_id
    assert rec["resource_s"] == {"cpu_core_s": 116.5, "ram_gb_s": 233.0, "gpu_s": 0.0}
    assert rec["scu_s"] == {"general": 87.375}  # 1.5 SCU × 58.25 s
    j = _judge(ENV)
    assert j.verdict is M.Verdict.ACCEPTED and not j.verdict.refused
    assert (j.wall_s, j.record_id, j.attempt_id) == (58.25, "att_a/1", "att_a")


def test_no_scu_seconds_without_a_rate_for_the_profile() -> None:
    assert _record(scu_rates={"ml-training": 3.0})["scu_s"] == {}
    assert _record(scu_rates=None)["scu_s"] == {}


def test_a_record_signed_with_another_sites_key_is_a_bad_signature() -> None:
    forged = M.sign(_record(), OTHER)
    j = _judge(forged)
    assert j.verdict is M.Verdict.BAD_SIGNATURE and j.field == "key_id"
    assert OTHER.key_id in j.reason
    # Even naming our key id, the other key's signature does not verify.
    body = {**_record(), "key_id": KEY.key_id}
    env = {"record": body, "signature": {"alg": "EdDSA", "key_id": KEY.key_id,
                                         "value": OTHER.sign(M.canonical_json(body))}}  # fmt: skip
    j = _judge(env)
    assert j.verdict is M.Verdict.BAD_SIGNATURE and j.field == "signature"


def test_a_rotated_key_still_verifies_its_old_records() -> None:
    keys = {KEY.key_id: KEY.public_key_b64, OTHER.key_id: OTHER.public_key_b64}
    assert _judge(ENV, keys=keys).verdict is M.Verdict.ACCEPTED
    assert _judge(M.sign(_record(), OTHER), keys=keys).verdict is M.Verdict.ACCEPTED


def test_a_changed_figure_after_signing_fails_verification() -> None:
    env = copy.deepcopy(ENV)
    env["record"]["wall_s"] = 30.0
    assert _judge(env).verdict is M.Verdict.BAD_SIGNATURE


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_single_byte_change_of_a_signed_record_fails_verification(data) -> None:
    """Change one byte of the record's canonical JSON (or of the signature); whatever still
    parses as a record is refused, never accepted."""
    raw = bytearray(M.canonical_json(ENV["record"]))
    where = data.draw(st.sampled_from(["record", "signature"]))
    if where == "record":
        i = data.draw(st.integers(0, len(raw) - 1))
        b = data.draw(st.integers(0, 255).filter(lambda x: x != raw[i]))
        raw[i] = b
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return  # not JSON any more: cannot even be sent as a record
        env = {"record": record, "signature": dict(ENV["signature"])}
    else:
        sig = bytearray(ENV["signature"]["value"].encode())
        i = data.draw(st.integers(0, len(sig) - 1))
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        sig[i] = ord(data.draw(st.sampled_from([c for c in alphabet if ord(c) != sig[i]])))
        signature = {**ENV["signature"], "value": sig.decode()}
        env = {"record": dict(ENV["record"]), "signature": signature}
    j = _judge(env)
    assert j.verdict.refused, (where, j)
    if not isinstance(env["record"], dict) or env["record"] == ENV["record"]:
        return
    assert j.verdict in (M.Verdict.BAD_SIGNATURE, M.Verdict.INVALID)


def test_a_replay_of_the_accepted_record_is_a_no_op_and_other_content_a_conflict() -> None:
    assert _judge(ENV, prior=ENV["record"]).verdict is M.Verdict.DUPLICATE
    other = M.sign(_record(wall_s=20.0), KEY)  # same record_id, validly signed, other figures
    j = _judge(other, prior=ENV["record"])
    assert j.verdict is M.Verdict.CONFLICT and j.field == "record_id"
    # A second record for the same attempt under another id is a conflict as well.
    second = M.sign(_record(wall_s=20.0) | {"record_id": "att_a/2"}, KEY)
    j = _judge(second, prior=ENV["record"])
    assert j.verdict is M.Verdict.CONFLICT and j.field == "attempt_id"


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 60, allow_nan=False), st.integers(0, 2**40), st.integers(0, 2**40))
def test_a_replay_is_a_no_op_exactly_when_its_content_is_the_same(wall, b_in, b_out) -> None:
    """Any validly signed record under an accepted record's id: a duplicate if it says the
    same, else a conflict — never accepted a second time."""
    again = M.sign(_record(wall_s=wall, bytes_in=b_in, bytes_out=b_out), KEY)
    j = _judge(again, prior=ENV["record"])
    same = again["record"] == ENV["record"]
    assert j.verdict is (M.Verdict.DUPLICATE if same else M.Verdict.CONFLICT)
    assert _judge(ENV, prior=ENV["record"]).verdict is M.Verdict.DUPLICATE


@pytest.mark.parametrize(
    ("observed", "field"),
    [
        (None, "attempt_id"),  # no such attempt
        (_seen(site_id="cn.dev.other.site9"), "attempt_id"),  # another site's attempt
        (_seen(task_id="tsk_b"), "task_id"),
        (_seen(pool_id="cn.dev.acme.site0.gpu"), "pool_id"),
    ],
)
def test_an_attempt_not_run_here_is_not_ours(observed, field) -> None:
    j = _judge(ENV, observed=observed)
    assert j.verdict is M.Verdict.NOT_OURS and j.field == field


def test_a_record_naming_another_site_is_not_ours() -> None:
    j = _judge(M.sign(_record(site_id="cn.dev.other.site9"), KEY))
    assert j.verdict is M.Verdict.NOT_OURS and j.field == "site_id"


def test_an_attempt_the_hub_never_saw_start_never_ran() -> None:
    j = _judge(ENV, observed=_seen(start_time=None, end_time=None))
    assert j.verdict is M.Verdict.NEVER_RAN and j.field == "attempt_id"


def test_wall_seconds_longer_than_observed_are_refused_beyond_the_tolerance() -> None:
    # The hub saw 20 s; tolerance 2 s + 1 % → up to 22.2 s passes, 58.25 s does not.
    seen = _seen(start_time=T0 + 41.0, end_time=T0 + 61.0)
    j = _judge(ENV, observed=seen)
    assert j.verdict is M.Verdict.LONGER_THAN_OBSERVED and j.field == "wall_s"
    ok = M.sign(_record(wall_s=22.2, started_at=T0 + 30.0), KEY)
    assert _judge(ok, observed=seen).verdict is M.Verdict.ACCEPTED
    # The agent's clock cannot stretch the span past the hub's own: placed at T0, received
    # 30 s later, so at most 30 s (+ tolerance) ran, whatever start and end times say.
    j = _judge(ENV, received_at=T0 + 30.0)
    assert j.verdict is M.Verdict.LONGER_THAN_OBSERVED


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"wall_s": -1.0}, "wall_s"),
        ({"wall_s": math.nan}, "wall_s"),
        ({"cpu_s": math.inf}, "cpu_s"),
        ({"bytes_in": -5}, "bytes_in"),
        ({"bytes_out": 1.5}, "bytes_out"),
        ({"v": 2}, "v"),
        ({"task_id": ""}, "task_id"),
        ({"resource_s": {"cpu_core_s": 1.0}}, "resource_s"),
        ({"ended_at": T0}, "ended_at"),
        ({"wall_s": 90.0}, "wall_s"),  # longer than its own ended_at − started_at
        ({"record_id": "att_b/1"}, "record_id"),
    ],
)
def test_malformed_figures_are_invalid_naming_the_field(change, field) -> None:
    body = {**ENV["record"], **change}
    # NaN and infinities are not JSON: they cannot be canonicalised, let alone signed.
    if any(isinstance(v, float) and not math.isfinite(v) for v in change.values()):
        env = {"record": body, "signature": dict(ENV["signature"])}
        assert _judge(env).verdict is M.Verdict.INVALID
        return
    env = {"record": body, "signature": {**ENV["signature"],
                                          "value": KEY.sign(M.canonical_json(body))}}  # fmt: skip
    j = _judge(env)
    assert j.verdict is M.Verdict.INVALID and j.field == field, j


@pytest.mark.parametrize("env", [{}, {"record": []}, {"record": {}, "signature": "x"}, []])
def test_what_is_not_an_envelope_is_invalid(env) -> None:
    assert _judge(env).verdict is M.Verdict.INVALID


def test_digest_is_stable_and_tells_envelopes_apart() -> None:
    assert M.digest(ENV) == M.digest(copy.deepcopy(ENV))
    assert M.digest(ENV) != M.digest(M.sign(_record(wall_s=1.0), KEY))
