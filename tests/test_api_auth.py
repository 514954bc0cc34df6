"""Authentication and authorisation on every route, found by walking the app's route table.

A route added later (by us or by an extension installed through an entry point) is covered
without touching this file: missing token -> 401, wrong token -> 401, a role the route's
permission does not include -> 403, a role it does -> neither 401 nor 403.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from stormwatch.api import ROLE_PERMISSIONS, Role, RouteInfo, create_app, register_router, requires, route_table
from stormwatch.api.extensions import unregister
from stormwatch.api.roles import READ
from stormwatch.api.tokens import (
    InvalidTokenError,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    verify_token,
)
from stormwatch.store import open_store
from test_api_harness import Api, api_fixture, build_api, concrete  # noqa: F401  (a fixture)

ROUTES = route_table(create_app("sqlite:///:memory:"))
ROUTE_IDS = [f"{r.method} {r.path}" for r in ROUTES]


def call(api: Api, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    # A body that is valid JSON but names nothing: auth must be decided before the body matters.
    body: dict[str, Any] | None = {} if method in {"POST", "PUT", "PATCH"} else None
    r = api.client.request(method, concrete(path), headers=headers or {}, json=body)
    return r.status_code, dict(r.headers)


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_missing_token_is_401_with_a_challenge(api: Api, route: RouteInfo) -> None:
    status, headers = call(api, route.method, route.path)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "header",
    [
        "Bearer sw_" + "A" * 43,  # well formed, unknown
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "sw_" + "A" * 43,  # no scheme
    ],
    ids=["unknown", "malformed", "basic", "empty-bearer", "no-scheme"],
)
def test_wrong_token_is_401(api: Api, route: RouteInfo, header: str) -> None:
    status, headers = call(api, route.method, route.path, {"Authorization": header})
    assert status == 401
    assert "Bearer" in headers["www-authenticate"]


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_roles_without_the_permission_get_403_and_with_it_pass(api: Api, route: RouteInfo) -> None:
    for role in Role:
        status, _ = call(api, route.method, route.path, api.headers(role))
        if route.permission in ROLE_PERMISSIONS[role]:
            assert status not in (401, 403), f"{role} was refused {route.method} {route.path}"
        else:
            assert status == 403, f"{role} was not refused {route.method} {route.path}"


def test_the_matrix_is_what_the_docs_say() -> None:
    # extensions (the TAXII server) add their own permissions, named with their prefix
    core = {role: {p for p in perms if not p.startswith("taxii:")} for role, perms in ROLE_PERMISSIONS.items()}
    assert core[Role.READ_ONLY] == {"read"}
    assert core[Role.ANALYST] == {"read", "cases:write", "appeals:file", "events:text", "screen", "ingest"}
    assert {p for p in ROLE_PERMISSIONS[Role.READ_ONLY] if p.startswith("taxii:")} <= {"taxii:read"}
    assert ROLE_PERMISSIONS[Role.ADMIN] >= {
        "read",
        "cases:write",
        "appeals:file",
        "appeals:decide",
        "actions:retry",
        "tokens:manage",
        "events:text",
        "screen",
        "ingest",
    }
    # no route that changes something is open to read-only tokens
    for r in ROUTES:
        if r.method != "GET":
            assert r.permission not in ROLE_PERMISSIONS[Role.READ_ONLY], f"{r.method} {r.path}"


def test_openapi_document_needs_a_token_and_names_permissions(api: Api) -> None:
    assert api.client.get("/api/v1/openapi.json").status_code == 401
    doc = api.client.get("/api/v1/openapi.json", headers=api.headers(Role.READ_ONLY)).json()
    assert doc["openapi"].startswith("3.")
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    ops = [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    assert ops
    documented = {(m, p) for m, p, _ in ops}
    assert documented == {(r.method, r.path) for r in ROUTES if not r.path.endswith("openapi.json")}
    for _m, _p, op in ops:
        assert op["x-stormwatch-permission"]
        assert op["security"] == [{"HTTPBearer": []}]
        assert op["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_a_malformed_body_without_a_token_is_still_401(api: Api) -> None:
    r = api.client.post("/api/v1/tokens", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = api.client.post(
        "/api/v1/tokens",
        content=b"{not json",
        headers={"Content-Type": "application/json", **api.headers(Role.ADMIN)},
    )
    assert r.status_code == 422


# -- extensions -------------------------------------------------------------------------------------


def test_an_extension_router_is_mounted_and_guarded(tmp_path: Path) -> None:
    router = APIRouter()

    @router.get("/ping", dependencies=[requires(READ)])
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    register_router("test-ping", router, prefix="/ext")
    try:
        api = build_api(f"sqlite:///{tmp_path / 'ext.db'}")
    finally:
        unregister("test-ping")
    assert ("GET", "/ext/ping", READ) in {(r.method, r.path, r.permission) for r in route_table(api.app)}
    assert api.client.get("/ext/ping").status_code == 401
    assert api.client.get("/ext/ping", headers=api.headers(Role.READ_ONLY)).json() == {"pong": "yes"}


def test_an_unguarded_route_stops_the_app_from_being_built(tmp_path: Path) -> None:
    def install(app: FastAPI) -> None:
        @app.get("/open")
        def open_route() -> dict[str, str]:
            return {}

    with pytest.raises(RuntimeError, match="no requires"):
        create_app(f"sqlite:///{tmp_path / 'x.db'}", extensions=[("open", install)])


def test_scopes_narrow_a_role(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scopes.db'}"
    store = open_store(url)
    token, _ = create_token(store, name="narrow", role=Role.ADMIN, scopes=["read"])
    store.close()
    client = TestClient(create_app(url), raise_server_exceptions=False)
    h = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/health", headers=h).status_code == 200
    assert client.get("/api/v1/tokens", headers=h).status_code == 403
    me = client.get("/api/v1/whoami", headers=h).json()
    assert me["role"] == "admin" and me["scopes"] == ["read"]


# -- tokens: hashing, expiry, revocation, on both backends ----------------------------------------


def test_tokens_are_stored_hashed_and_listed_without_secrets(db_url: str) -> None:
    store = open_store(db_url)
    try:
        token, info = create_token(store, name="ci", role="analyst", expires_in=timedelta(days=3))
        assert token.startswith("sw_") and len(token) == 46
        assert info.token_id == token[3:11]
        rows = store.query("SELECT * FROM api_tokens")
        flat = " ".join(str(v) for row in rows for v in row)
        assert token not in flat and token[11:] not in flat
        assert hash_token(token) in flat
        listed = list_tokens(store)
        assert [t.token_id for t in listed] == [info.token_id]
        assert token not in repr(listed) and "token_sha256" not in listed[0].to_dict()
        assert verify_token(store, token).role is Role.ANALYST
    finally:
        store.close()


def test_expired_and_revoked_tokens_are_refused(db_url: str) -> None:
    store = open_store(db_url)
    try:
        past = datetime.now(UTC) - timedelta(days=10)
        old, _ = create_token(store, name="old", role="admin", expires_in=timedelta(days=1), now=past)
        with pytest.raises(InvalidTokenError, match="expired"):
            verify_token(store, old)
        live, info = create_token(store, name="live", role="admin")
        assert verify_token(store, live).token_id == info.token_id
        revoke_token(store, info.token_id, by="analyst:test")
        with pytest.raises(InvalidTokenError, match="revoked"):
            verify_token(store, live)
        # a right id with a wrong secret
        forged = live[:11] + ("A" if live[11] != "A" else "B") + live[12:]
        with pytest.raises(InvalidTokenError, match="unknown"):
            verify_token(store, forged)
        statuses = {t.name: t.status() for t in list_tokens(store)}
        assert statuses == {"old": "expired", "live": "revoked"}
        actions = [r[0] for r in store.query("SELECT action FROM disrupt_audit ORDER BY seq")]
        assert actions == ["token.create", "token.create", "token.revoke"]
    finally:
        store.close()


def test_revocation_and_expiry_over_http_on_each_backend(db_url: str) -> None:
    api = build_api(db_url)
    with api.client:
        admin = api.headers(Role.ADMIN)
        made = api.client.post("/api/v1/tokens", json={"name": "temp", "role": "read-only"}, headers=admin)
        assert made.status_code == 201
        body = made.json()
        h = {"Authorization": f"Bearer {body['token']}"}
        assert api.client.get("/api/v1/whoami", headers=h).json()["token_id"] == body["token_id"]
        listed = api.client.get("/api/v1/tokens", headers=admin).json()["items"]
        assert body["token"] not in str(listed)
        assert api.client.post(f"/api/v1/tokens/{body['token_id']}/revoke", headers=admin).status_code == 200
        r = api.client.get("/api/v1/whoami", headers=h)
        assert r.status_code == 401 and "revoked" in r.json()["error"]
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        store = open_store(db_url)
        try:
            expired, _ = create_token(
                store,
                name="gone",
                role="admin",
                expires_in=timedelta(seconds=1),
                now=datetime.now(UTC) - timedelta(hours=1),
            )
        finally:
            store.close()
        r = api.client.get("/api/v1/health", headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and "expired" in r.json()["error"]


def test_the_request_log_names_the_token_id_and_never_the_token(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    token = api.tokens[Role.READ_ONLY]
    with caplog.at_level(logging.INFO, logger="stormwatch"):
        api.client.get("/api/v1/health?x=1", headers=api.headers(Role.READ_ONLY))
        api.client.get("/api/v1/health", headers={"Authorization": "Bearer sw_" + secrets.token_urlsafe(32)})
    lines = [r.getMessage() for r in caplog.records if r.name == "stormwatch.api.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /api/v1/health 200") and f"token={token[3:11]}" in lines[0]
    assert lines[1].startswith("GET /api/v1/health 401") and lines[1].endswith("token=-")
    text = caplog.text
    assert token not in text and token[11:] not in text and "Bearer" not in text and "x=1" not in text
