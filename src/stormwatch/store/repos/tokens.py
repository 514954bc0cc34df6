"""API tokens (table ``api_tokens``): only a SHA-256 of each token is stored, never the token.

The token logic (drawing, hashing, verifying in constant time, auditing) is in
:mod:`stormwatch.api.tokens`; this is its storage. Nothing here commits: the caller commits
together with the audit entry of the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.errors import StoreError
from stormwatch.store.database import Repository

__all__ = ["TokenRecord", "TokensRepo"]

_COLS = "token_id, name, role, scopes, token_sha256, created_at, created_by, expires_at, revoked_at, last_used_at"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One stored token: its public id, what it may do, and the hash of its secret."""

    token_id: str
    name: str
    role: str
    scopes: tuple[str, ...]
    token_sha256: str
    created_at: str
    created_by: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


def _record(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        token_id=r[0],
        name=r[1],
        role=r[2],
        scopes=tuple(orjson.loads(r[3])) if r[3] else (),
        token_sha256=str(r[4]),
        created_at=r[5],
        created_by=r[6],
        expires_at=r[7],
        revoked_at=r[8],
        last_used_at=r[9],
    )


class TokensRepo(Repository):
    def exists(self, token_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM api_tokens WHERE token_id = ?", (token_id,)))

    def insert(self, t: TokenRecord) -> None:
        """Store a new token; a ``token_id`` or hash already stored raises :class:`StoreError`."""
        if not t.token_id or len(t.token_sha256) != 64:
            raise StoreError("a token record needs an id and a SHA-256 hex digest")
        self._x(
            f"INSERT INTO api_tokens ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.token_id,
                t.name,
                t.role,
                orjson.dumps(list(t.scopes)).decode() if t.scopes else None,
                t.token_sha256,
                t.created_at,
                t.created_by,
                t.expires_at,
                t.revoked_at,
                t.last_used_at,
            ),
        )

    def get(self, token_id: str) -> TokenRecord | None:
        rows = self._q(f"SELECT {_COLS} FROM api_tokens WHERE token_id = ?", (token_id,))
        return _record(rows[0]) if rows else None

    def all(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        return [_record(r) for r in self._q(f"SELECT {_COLS} FROM api_tokens ORDER BY created_at, token_id")]

    def revoke(self, token_id: str, *, ts: str) -> bool:
        """Revoke at ``ts`` unless already revoked (the first time stays); True when this call revoked it."""
        return (
            self._x("UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (ts, token_id))
            == 1
        )

    def touch(self, token_id: str, *, ts: str) -> None:
        """Record a use of the token at ``ts``."""
        self._x("UPDATE api_tokens SET last_used_at = ? WHERE token_id = ?", (ts, token_id))
