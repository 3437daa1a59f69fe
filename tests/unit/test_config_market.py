"""The market's operator settings: CPNET_PLATFORM_FEE_BPS and CPNET_QUOTE_TTL_S."""

from __future__ import annotations

import pytest

from cpnet.config import HubSettings


def test_the_fee_and_quote_ttl_come_from_the_environment(monkeypatch) -> None:
    assert HubSettings().platform_fee_bps == 500 and HubSettings().quote_ttl_s == 300.0
    monkeypatch.setenv("CPNET_PLATFORM_FEE_BPS", "250")
    monkeypatch.setenv("CPNET_QUOTE_TTL_S", "60")
    s = HubSettings.from_env()
    assert s.platform_fee_bps == 250 and s.quote_ttl_s == 60.0


@pytest.mark.parametrize("value", ["abc", "2.5", "-1", "5001"])
def test_a_bad_fee_is_refused_naming_the_variable(monkeypatch, value) -> None:
    monkeypatch.setenv("CPNET_PLATFORM_FEE_BPS", value)
    with pytest.raises(ValueError, match="CPNET_PLATFORM_FEE_BPS"):
        HubSettings.from_env()
