"""The test plumbing itself: database fixtures and the skip-or-fail rule for missing services."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

TESTS_DIR = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_working_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert "PostgreSQL" in conn.execute(sa.text("select version()")).scalar_one()
            db = conn.execute(sa.text("select current_database()")).scalar_one()
            assert db == sa.make_url(postgres_url).database
            assert db.startswith("cpnet_test_")
            assert sa.inspect(conn).get_table_names() == []

            conn.execute(sa.text("create table plumbing (id int primary key, v jsonb)"))
            conn.execute(sa.text("""insert into plumbing values (1, '{"a": 1}')"""))
            assert conn.execute(sa.text("select v->>'a' from plumbing")).scalar_one() == "1"
            conn.execute(sa.text("drop table plumbing"))
            conn.commit()
            assert sa.inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_database_url_works_for_each_backend(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (id integer primary key)"))
            conn.execute(sa.text("insert into t values (1), (2)"))
            assert conn.execute(sa.text("select count(*) from t")).scalar_one() == 2
    finally:
        engine.dispose()


def test_sqlite_url_points_into_tmp_path(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path}/cpnet.db"


@pytest.mark.parametrize("required", [False, True], ids=["optional", "required"])
def test_need_service_skips_or_fails(tmp_path: Path, required: bool) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(TESTS_DIR)!r})
            from services import need_service

            def test_needs_widget():
                need_service("widget", "no widget here")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "CPNET_REQUIRE_SERVICES"}
    if required:
        env["CPNET_REQUIRE_SERVICES"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    if required:
        assert proc.returncode == 1, out
        assert "1 failed" in out, out
        assert "widget required (CPNET_REQUIRE_SERVICES=1): no widget here" in out, out
    else:
        assert proc.returncode == 0, out
        assert "1 skipped" in out, out
        assert "no widget here" in out, out
