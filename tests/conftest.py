"""Shared fixtures. Store tests run on every backend: SQLite (a temp file) and the real PostgreSQL.

PostgreSQL comes from ``STORMWATCH_TEST_PG_URL`` (default: the server on this machine,
``postgresql://postgres@127.0.0.1:5432/test``); each test gets its own schema, dropped afterwards.
Set ``STORMWATCH_SKIP_PG=1`` to skip the PostgreSQL runs on a machine without the server; CI never sets it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.store import Store, open_store

PG_URL = os.environ.get("STORMWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema={schema}"


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stormwatch.db'}"
        return
    if os.environ.get("STORMWATCH_SKIP_PG") == "1":
        pytest.skip(reason="STORMWATCH_SKIP_PG=1: PostgreSQL runs skipped on this machine")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield _pg_schema_url(schema)
    _drop_schema(schema)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'stormwatch.db'}"


@pytest.fixture
def one_openmp_thread() -> Iterator[None]:
    """OpenMP learners (scikit-learn's boosted trees) on one thread: spread over every core beside
    the other test worker they oversubscribe the machine (a combiner test took 35 s instead of 6)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield
