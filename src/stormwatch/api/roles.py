"""Roles and permissions: the one table that says who may do what.

Every route names one permission (see :func:`stormwatch.api.auth.requires`); a token has one role,
and optionally scopes that narrow it further. This module is the only place that maps roles to
permissions.

==================  =========  =======  =====
permission          read-only  analyst  admin
==================  =========  =======  =====
``read``            yes        yes      yes
``cases:write``     -          yes      yes
``appeals:file``    -          yes      yes
``appeals:decide``  -          -        yes
``actions:retry``   -          -        yes
``tokens:manage``   -          -        yes
``events:text``     -          yes      yes
``screen``          -          yes      yes
``ingest``          -          yes      yes
==================  =========  =======  =====

Reading the text of usage events (user content) is kept from read-only tokens; every read is
audited (``event.text.read``).

Deciding an appeal is kept from analysts on purpose: the person who reviews an enforcement should
not be the one who asked for it (separation of duties), so an admin decides.

Extensions (a TAXII server, say) add their own permissions with :func:`register_permission`,
naming the roles that get them; a token's scopes can then narrow those too
(e.g. ``taxii:read:<collection-id>``).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    READ_ONLY = "read-only"
    ANALYST = "analyst"
    ADMIN = "admin"


READ = "read"
CASES_WRITE = "cases:write"
APPEALS_FILE = "appeals:file"
APPEALS_DECIDE = "appeals:decide"
ACTIONS_RETRY = "actions:retry"
TOKENS_MANAGE = "tokens:manage"
EVENTS_TEXT = "events:text"
SCREEN = "screen"  # POST /v1/moderations, the LiteLLM guardrail: score text
INGEST = "ingest"  # POST /v1/traces (OTLP): store usage events

ROLE_PERMISSIONS: dict[Role, set[str]] = {
    Role.READ_ONLY: {READ},
    Role.ANALYST: {READ, CASES_WRITE, APPEALS_FILE, EVENTS_TEXT, SCREEN, INGEST},
    Role.ADMIN: {
        READ,
        CASES_WRITE,
        APPEALS_FILE,
        APPEALS_DECIDE,
        ACTIONS_RETRY,
        TOKENS_MANAGE,
        EVENTS_TEXT,
        SCREEN,
        INGEST,
    },
}


def register_permission(permission: str, roles: set[Role] | frozenset[Role]) -> None:
    """Add ``permission`` (an extension's) to ``roles``; admin always gets it."""
    if not permission or any(c.isspace() for c in permission):
        raise ValueError(f"bad permission name {permission!r}")
    for role in {*roles, Role.ADMIN}:
        ROLE_PERMISSIONS[role].add(permission)


def known_permissions() -> set[str]:
    return set().union(*ROLE_PERMISSIONS.values())


def role_allows(role: Role, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"unknown role {value!r}; one of: {', '.join(r.value for r in Role)}") from None
