"""The staging schemes against their interface: what a scheme's attributes promise, it does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cpnet.agent.staging.registry import SCHEMES
from cpnet.agent.staging.scheme import Scheme


def overrides(cls: type[Scheme], method: str) -> bool:
    return getattr(cls, method) is not getattr(Scheme, method)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_a_scheme_implements_what_its_attributes_promise(name: str) -> None:
    cls = SCHEMES[name]
    assert overrides(cls, "fetch") and overrides(cls, "put")  # every scheme moves single files
    assert overrides(cls, "fetch_tree") == cls.dir_inputs
    assert overrides(cls, "put_tree") == (cls.dir_outputs or cls.file_sets)
    assert overrides(cls, "log_url_bytes") == cls.file_sets


def test_the_registry_maps_the_url_schemes_staging_takes() -> None:
    assert sorted(SCHEMES) == ["cpnet", "file", "http", "https", "s3"]


def test_importing_staging_leaves_httpx_and_boto3_for_the_transfers_that_need_them() -> None:
    code = (
        "import sys; import cpnet.agent.staging; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'httpx', 'boto3', 'botocore'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
