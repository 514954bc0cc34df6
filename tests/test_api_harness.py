"""Shared pieces of the API tests: an app with one token per role, and helpers.

The other ``test_api_*`` modules import from here (pytest puts ``tests/`` on ``sys.path``). The
app runs in-process on a real SQLite file (or PostgreSQL through ``db_url``), never on mocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from stormwatch.api import OPENAPI_PATH, Role, create_app, route_table
from stormwatch.api.guard import RequestLimits
from stormwatch.api.tokens import create_token
from stormwatch.store import open_store


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    url: str
    tokens: dict[Role, str]

    def headers(self, role: Role | str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[Role(role)]}"}


def build_api(url: str, **kwargs: Any) -> Api:
    """An app on ``url`` (``create_app`` keyword arguments pass through) and a token per role."""
    store = open_store(url)
    try:
        tokens = {role: create_token(store, name=f"test-{role.value}", role=role)[0] for role in Role}
    finally:
        store.close()
    # The route-table walks make hundreds of failed calls from one client address on purpose;
    # the failed-authentication throttle itself is tested in test_hardening_api.py.
    kwargs.setdefault("limits", RequestLimits(auth_failure_limit=0))
    app = create_app(url, **kwargs)
    return Api(app, TestClient(app, raise_server_exceptions=False), url, tokens)


@pytest.fixture(scope="module", name="api")
def api_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app per test module on a SQLite file, with a token for each role."""
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'api.db'}"
    a = build_api(url)
    with a.client:
        yield a


def concrete(path: str) -> str:
    """A request path for a route path: each ``{param}`` becomes a value that names nothing."""
    return re.sub(r"\{[^}]+\}", "no-such-id", path)


def test_every_route_is_listed_with_a_permission(tmp_path: Path) -> None:
    table = route_table(create_app(f"sqlite:///{tmp_path / 'x.db'}"))
    assert table, "the app has no routes"
    assert all(r.permission for r in table)
    assert ("GET", OPENAPI_PATH) in {(r.method, r.path) for r in table}
