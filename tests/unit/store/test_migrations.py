"""The migrations form one line: exactly one head (two branches that each chain a migration
after the same revision would leave two, and `upgrade head` would refuse to run)."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from cpnet.store.db import MIGRATIONS


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def test_there_is_exactly_one_head() -> None:
    heads = _scripts().get_heads()
    assert len(heads) == 1, f"several heads {heads}: chain the newest migration after main's"
