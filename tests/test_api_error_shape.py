"""Every error the API returns has one shape: ``{"ok": false, "error", "errors": [...], "status"}``.

One test per kind of error (401, 403, 404 route and resource, 405, 422 query and body, 400,
409, 500, 503 and a service error mapped with ``map_error``), each checked by :func:`assert_error_shape`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from stormwatch.api import Conflict, Role, requires
from stormwatch.api.errors import map_error
from stormwatch.api.roles import READ
from stormwatch.errors import InputError, StoreError, StormwatchError
from test_api_harness import Api, build_api


class _ServiceGone(InputError):
    """Stands for a service layer's own error class, answered with a status through map_error."""


map_error(_ServiceGone, 410)


def _boom_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/boom", dependencies=[requires(READ)])

    @router.get("/crash")
    def crash() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    @router.get("/store")
    def store_down() -> None:
        raise StoreError("PostgreSQL: connection refused to 10.0.0.5")

    @router.get("/conflict")
    def conflict() -> None:
        raise Conflict("the case is closed")

    @router.get("/input")
    def bad_input() -> None:
        raise InputError("label must be true_positive or false_positive")

    @router.get("/ours")
    def ours() -> None:
        raise StormwatchError("something we raised on purpose")

    @router.get("/gone")
    def gone() -> None:
        raise _ServiceGone("appeal withdrawn")

    app.include_router(router, prefix="/api/v1")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    a = build_api(f"sqlite:///{tmp_path_factory.mktemp('shape') / 'api.db'}", extensions=[("boom", _boom_routes)])
    with a.client:
        yield a


def assert_error_shape(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) == {"ok", "error", "errors", "status"}
    assert body["ok"] is False
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["errors"], list) and body["errors"]
    for e in body["errors"]:
        assert set(e) == {"type", "msg", "loc"}
        assert isinstance(e["type"], str) and isinstance(e["msg"], str) and isinstance(e["loc"], list)
    return body


def test_401_missing_token(api: Api) -> None:
    r = api.client.get("/api/v1/health")
    body = assert_error_shape(r, 401)
    assert body["errors"][0]["type"] == "unauthorized"
    assert r.headers["www-authenticate"] == 'Bearer realm="stormwatch"'


def test_401_bad_token(api: Api) -> None:
    r = api.client.get("/api/v1/health", headers={"Authorization": "Bearer sw_" + "x" * 43})
    assert_error_shape(r, 401)
    assert r.headers["www-authenticate"] == 'Bearer realm="stormwatch", error="invalid_token"'


def test_403_role(api: Api) -> None:
    body = assert_error_shape(api.client.get("/api/v1/tokens", headers=api.headers(Role.ANALYST)), 403)
    assert body["errors"][0]["type"] == "forbidden"


def test_404_unknown_route(api: Api) -> None:
    assert_error_shape(api.client.get("/api/v1/nothing-here", headers=api.headers(Role.ADMIN)), 404)
    assert_error_shape(api.client.get("/", headers=api.headers(Role.ADMIN)), 404)


def test_404_unknown_resource(api: Api) -> None:
    body = assert_error_shape(api.client.get("/api/v1/accounts/nobody", headers=api.headers(Role.ADMIN)), 404)
    assert "nobody" in body["error"]


def test_405_wrong_method(api: Api) -> None:
    r = api.client.delete("/api/v1/health", headers=api.headers(Role.ADMIN))
    assert_error_shape(r, 405)
    assert r.headers["allow"] == "GET"


def test_422_query_validation(api: Api) -> None:
    r = api.client.get("/api/v1/accounts?limit=0&min_risk=2", headers=api.headers(Role.ADMIN))
    body = assert_error_shape(r, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} == {("query", "limit"), ("query", "min_risk")}


def test_422_body_validation(api: Api) -> None:
    r = api.client.post("/api/v1/tokens", json={"name": "", "role": "root"}, headers=api.headers(Role.ADMIN))
    body = assert_error_shape(r, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "name"), ("body", "role")}
    r = api.client.post(
        "/api/v1/tokens", content=b"{", headers={"Content-Type": "application/json", **api.headers(Role.ADMIN)}
    )
    assert_error_shape(r, 422)


def test_400_bad_cursor_and_input_error(api: Api) -> None:
    body = assert_error_shape(api.client.get("/api/v1/accounts?cursor=%%%", headers=api.headers(Role.ADMIN)), 400)
    assert "cursor" in body["error"]
    body = assert_error_shape(api.client.get("/api/v1/boom/input", headers=api.headers(Role.ADMIN)), 400)
    assert body["error"] == "label must be true_positive or false_positive"


def test_409_conflict(api: Api) -> None:
    body = assert_error_shape(api.client.get("/api/v1/boom/conflict", headers=api.headers(Role.ADMIN)), 409)
    assert body["errors"][0]["type"] == "conflict"


def test_mapped_service_error(api: Api) -> None:
    assert_error_shape(api.client.get("/api/v1/boom/gone", headers=api.headers(Role.ADMIN)), 410)


def test_500_hides_internals(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    body = assert_error_shape(api.client.get("/api/v1/boom/crash", headers=api.headers(Role.ADMIN)), 500)
    assert body["error"] == "internal server error" and "hunter2" not in str(body)
    assert "hunter2" in caplog.text  # logged for the operator, not returned
    assert_error_shape(api.client.get("/api/v1/boom/ours", headers=api.headers(Role.ADMIN)), 500)


def test_503_database_errors_are_not_echoed(api: Api) -> None:
    body = assert_error_shape(api.client.get("/api/v1/boom/store", headers=api.headers(Role.ADMIN)), 503)
    assert "10.0.0.5" not in str(body)


def test_the_error_schema_is_in_the_openapi_document(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json", headers=api.headers(Role.READ_ONLY)).json()
    schema = doc["components"]["schemas"]["Error"]
    assert schema["required"] == ["ok", "error", "errors", "status"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
