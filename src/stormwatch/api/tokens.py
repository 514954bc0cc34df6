"""API tokens: created once, stored only as a hash, looked up by a public id.

Creating and revoking a token are recorded in the audit chain (``store.audit``); the rows are kept by
``store.tokens`` (:mod:`stormwatch.store.repos.tokens`).

Errors are this module's own (it knows nothing of HTTP): :class:`InvalidTokenError` for a token that
is malformed, unknown, expired or revoked (the API answers 401, see :mod:`stormwatch.api.auth`) and
:class:`TokenNotFoundError` for revoking an unknown id (404; an ``InputError`` on the command line).

A token is ``sw_`` followed by 32 random bytes in URL-safe base64 (43 characters). Its first 8
characters after ``sw_`` are the token's public id (``token_id``): ``token list`` shows it,
``token revoke`` takes it, and logs name a caller by it. The database keeps that id and the
SHA-256 of the whole token, never the token.

Why SHA-256 and not scrypt/argon2: those slow hashes protect *low-entropy* secrets (passwords)
from offline guessing. A token carries 256 random bits (208 of them not in the id), so no
guessing is feasible against a fast hash either, and a slow hash would cost CPU on every request
(an easy denial of service). Verification fetches the row by id and compares hashes with
:func:`hmac.compare_digest` (constant time), so response timing says nothing about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stormwatch.api.roles import Role, parse_role
from stormwatch.errors import InputError, StormwatchError
from stormwatch.store import Store
from stormwatch.store.repos.audit import AuditEvent
from stormwatch.store.repos.tokens import TokenRecord

PREFIX = "sw_"
ID_LENGTH = 8
_SECRET_BYTES = 32
_TOKEN_LENGTH = len(PREFIX) + 43
#: how stale ``last_used_at`` may get before a request writes it again
LAST_USED_RESOLUTION = timedelta(minutes=1)

__all__ = [
    "InvalidTokenError",
    "TokenError",
    "TokenInfo",
    "TokenNotFoundError",
    "create_token",
    "get_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
    "verify_token",
]


class TokenError(StormwatchError):
    """Base of the token errors."""


class InvalidTokenError(TokenError):
    """The token is malformed, unknown, expired or revoked. The message never repeats the token."""


class TokenNotFoundError(TokenError, InputError):
    """No token has this id."""


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str | None) -> datetime | None:
    return None if s is None else datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known about a token, without its secret."""

    token_id: str
    name: str
    role: Role
    scopes: tuple[str, ...]
    created_at: str
    created_by: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        expires = _parse(self.expires_at)
        if expires is not None and expires <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["role"] = self.role.value
        d["scopes"] = list(self.scopes)
        d["status"] = self.status()
        return d


def _info(t: TokenRecord) -> TokenInfo:
    return TokenInfo(
        token_id=t.token_id,
        name=t.name,
        role=Role(t.role),
        scopes=t.scopes,
        created_at=t.created_at,
        created_by=t.created_by,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        last_used_at=t.last_used_at,
    )


def _audit(store: Store, actor: str | None, action: str, info: TokenInfo) -> None:
    """Record a token change in the audit chain, in the caller's transaction (never the secret)."""
    evidence = {"name": info.name, "role": info.role.value, "scopes": list(info.scopes)}
    if info.expires_at:
        evidence["expires_at"] = info.expires_at
    store.audit.append(
        AuditEvent(actor=actor or "system:api", action=action, target=f"token:{info.token_id}", evidence=evidence)
    )


def create_token(
    store: Store,
    *,
    name: str,
    role: Role | str,
    scopes: Iterable[str] = (),
    expires_in: timedelta | None = None,
    created_by: str | None = None,
    now: datetime | None = None,
) -> tuple[str, TokenInfo]:
    """Make a token; return ``(token, info)``. The token is not stored and cannot be shown again."""
    name = name.strip()
    if not name:
        raise InputError("a token needs a name")
    try:
        role = parse_role(role) if isinstance(role, str) else role
    except ValueError as exc:
        raise InputError(str(exc)) from None
    scope_list = sorted({s.strip() for s in scopes if s.strip()})
    if expires_in is not None and expires_in <= timedelta(0):
        raise InputError("a token's lifetime must be positive")
    now = now or datetime.now(UTC)
    for _ in range(5):
        token = PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
        token_id = token[len(PREFIX) : len(PREFIX) + ID_LENGTH]
        # an id that starts with "-" reads as an option on a command line (`token revoke -abc`)
        if not token_id.startswith("-") and not store.tokens.exists(token_id):
            break
    else:  # pragma: no cover - 48 random bits colliding five times running
        raise RuntimeError("could not draw an unused token id")
    info = TokenInfo(
        token_id=token_id,
        name=name,
        role=role,
        scopes=tuple(scope_list),
        created_at=_iso(now),
        created_by=created_by,
        expires_at=None if expires_in is None else _iso(now + expires_in),
        revoked_at=None,
        last_used_at=None,
    )
    try:
        store.tokens.insert(
            TokenRecord(
                token_id=info.token_id,
                name=info.name,
                role=info.role.value,
                scopes=info.scopes,
                token_sha256=hash_token(token),
                created_at=info.created_at,
                created_by=info.created_by,
                expires_at=info.expires_at,
                revoked_at=None,
                last_used_at=None,
            )
        )
        _audit(store, created_by, "token.create", info)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return token, info


def get_token(store: Store, token_id: str) -> TokenInfo | None:
    got = store.tokens.get(token_id)
    return None if got is None else _info(got)


def list_tokens(store: Store, *, include_inactive: bool = True) -> list[TokenInfo]:
    infos = [_info(t) for t in store.tokens.all()]
    return infos if include_inactive else [i for i in infos if i.status() == "active"]


def revoke_token(store: Store, token_id: str, *, by: str | None = None, now: datetime | None = None) -> TokenInfo:
    """Revoke a token (idempotent: revoking twice keeps the first time)."""
    info = get_token(store, token_id)
    if info is None:
        raise TokenNotFoundError(f"no token {token_id!r}", hint="list tokens with `stormwatch token list`")
    try:
        if store.tokens.revoke(token_id, ts=_iso(now or datetime.now(UTC))):  # audit only the revocation made
            _audit(store, by, "token.revoke", info)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    got = get_token(store, token_id)
    assert got is not None
    return got


def verify_token(store: Store, token: str, *, now: datetime | None = None) -> TokenInfo:
    """The token's info if it is known, active and unexpired; else :class:`InvalidTokenError`.

    The message never repeats the token.
    """
    if not token.startswith(PREFIX) or len(token) != _TOKEN_LENGTH:
        raise InvalidTokenError("malformed API token")
    token_id = token[len(PREFIX) : len(PREFIX) + ID_LENGTH]
    expected = store.tokens.get(token_id)
    # Compare even when no row matched, so the timing of an unknown id looks like a wrong secret.
    digest = hash_token(token)
    if not hmac.compare_digest(digest, expected.token_sha256 if expected else "0" * 64) or expected is None:
        raise InvalidTokenError("unknown API token")
    info = _info(expected)
    now = now or datetime.now(UTC)
    status = info.status(now)
    if status != "active":
        raise InvalidTokenError(f"API token {info.token_id} is {status}")
    last = _parse(info.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        store.tokens.touch(token_id, ts=_iso(now))
        store.commit()
    return info
