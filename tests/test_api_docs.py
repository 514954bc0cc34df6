"""docs/api.md lists every route with the permission the app enforces, and the role matrix."""

from __future__ import annotations

import re
from pathlib import Path

from stormwatch.api import ROLE_PERMISSIONS, Role, create_app, route_table
from stormwatch.api.roles import (
    ACTIONS_RETRY,
    APPEALS_DECIDE,
    APPEALS_FILE,
    CASES_WRITE,
    EVENTS_TEXT,
    INGEST,
    READ,
    SCREEN,
    TOKENS_MANAGE,
)

DOC = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")


def test_every_route_is_documented_with_its_permission() -> None:
    documented = set(re.findall(r"^\| `([A-Z]+)` \| `(/[^`]*)` \| `([^`]+)` \|", DOC, flags=re.MULTILINE))
    actual = {(r.method, r.path, r.permission) for r in route_table(create_app("sqlite:///:memory:"))}
    assert actual == documented


def test_the_role_matrix_matches_the_code() -> None:
    rows = re.findall(r"^\| `([a-z:]+)` \| (yes|-) \| (yes|-) \| (yes|-) \|", DOC, flags=re.MULTILINE)
    assert rows
    for permission, *cells in rows:
        for role, cell in zip((Role.READ_ONLY, Role.ANALYST, Role.ADMIN), cells, strict=True):
            assert (permission in ROLE_PERMISSIONS[role]) == (cell == "yes"), (permission, role)
    builtin = {
        READ, CASES_WRITE, APPEALS_FILE, APPEALS_DECIDE, ACTIONS_RETRY, TOKENS_MANAGE, EVENTS_TEXT, SCREEN, INGEST,
    }  # fmt: skip
    assert {r[0] for r in rows} == builtin
