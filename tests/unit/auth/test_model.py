"""The tenancy rule every route applies (Principal.sees / must_see)."""

from __future__ import annotations

import pytest

from cpnet.auth.model import Principal, Role
from cpnet.errors import NotFound


def who(role: Role, org: str = "org_a") -> Principal:
    return Principal(token_id="t", role=role, org_id=org)


@pytest.mark.parametrize("role", [Role.USER, Role.PROVIDER_ADMIN, Role.AGENT])
def test_a_caller_sees_its_own_organisation_only(role: Role) -> None:
    assert who(role).sees("org_a")
    assert not who(role).sees("org_b")
    assert not who(role).sees(None)  # an object of no organisation (or none at all)


def test_an_admin_sees_every_organisation() -> None:
    assert who(Role.ADMIN, "platform").sees("org_b")


def test_must_see_answers_another_organisations_object_as_unknown() -> None:
    with pytest.raises(NotFound) as e:
        who(Role.USER).must_see("org_b", "site", "ste_1", "site_id")
    assert (e.value.message, e.value.field) == ("no site 'ste_1'", "site_id")
    who(Role.USER).must_see("org_a", "site", "ste_1", "site_id")  # no error
