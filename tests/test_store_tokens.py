"""The token repository (``store.tokens``) on SQLite and PostgreSQL, the token module's own errors, and
the import order of the API's auth, errors and tokens modules (no circle)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from stormwatch.api.tokens import (
    InvalidTokenError,
    TokenNotFoundError,
    create_token,
    get_token,
    hash_token,
    revoke_token,
    verify_token,
)
from stormwatch.errors import InputError, StoreError
from stormwatch.store import Store, open_store
from stormwatch.store.repos.tokens import TokenRecord

T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-02T00:00:00.000000Z"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def record(token_id: str, *, created: str = T0, scopes: tuple[str, ...] = ()) -> TokenRecord:
    return TokenRecord(
        token_id=token_id,
        name=f"name-{token_id}",
        role="analyst",
        scopes=scopes,
        token_sha256=hash_token(f"sw_{token_id}"),
        created_at=created,
        created_by="admin",
        expires_at=None,
        revoked_at=None,
        last_used_at=None,
    )


def test_insert_get_list_revoke_and_touch(store: Store) -> None:
    assert not store.tokens.exists("abcd1234")
    store.tokens.insert(record("abcd1234", created=T1, scopes=("taxii:read:c1", "cases:write")))
    store.tokens.insert(record("zzzz0000"))
    store.commit()
    got = store.tokens.get("abcd1234")
    assert got is not None and got.scopes == ("taxii:read:c1", "cases:write") and got.role == "analyst"
    assert store.tokens.exists("abcd1234") and store.tokens.get("nope") is None
    assert [t.token_id for t in store.tokens.all()] == ["zzzz0000", "abcd1234"]  # oldest first
    assert store.tokens.get("zzzz0000").scopes == ()  # type: ignore[union-attr]
    assert store.tokens.revoke("abcd1234", ts=T0) is True
    assert store.tokens.revoke("abcd1234", ts=T1) is False  # the first revocation stays
    assert store.tokens.revoke("nope", ts=T1) is False
    store.tokens.touch("zzzz0000", ts=T1)
    store.commit()
    assert store.tokens.get("abcd1234").revoked_at == T0  # type: ignore[union-attr]
    assert store.tokens.get("zzzz0000").last_used_at == T1  # type: ignore[union-attr]


def test_duplicates_and_bad_records_are_refused(store: Store) -> None:
    store.tokens.insert(record("abcd1234"))
    store.commit()
    with pytest.raises(StoreError):
        store.tokens.insert(record("abcd1234"))  # same id
    store.rollback()
    with pytest.raises(StoreError, match="SHA-256"):
        store.tokens.insert(TokenRecord("x", "n", "admin", (), "not-a-digest", T0, None, None, None, None))
    with pytest.raises(StoreError):
        store.tokens.insert(TokenRecord("", "n", "admin", (), "0" * 64, T0, None, None, None, None))


def test_token_errors_belong_to_the_token_module(store: Store) -> None:
    with pytest.raises(InvalidTokenError, match="malformed"):
        verify_token(store, "Bearer nonsense")
    with pytest.raises(InvalidTokenError, match="unknown"):
        verify_token(store, "sw_" + "A" * 43)
    with pytest.raises(TokenNotFoundError) as caught:
        revoke_token(store, "nope")
    assert isinstance(caught.value, InputError)  # exit code 4 on the command line
    token, info = create_token(store, name="svc", role="admin", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert verify_token(store, token).token_id == info.token_id
    assert get_token(store, info.token_id) is not None
    assert store.audit.entries()[-1].action == "token.create"  # the token change is in the chain
    revoke_token(store, info.token_id, by="admin")
    revoke_token(store, info.token_id, by="admin")  # idempotent: audited once
    assert [e.action for e in store.audit.entries()] == ["token.create", "token.revoke"]


def test_auth_errors_and_tokens_import_in_one_direction() -> None:
    """errors imports neither auth nor tokens; tokens imports neither errors nor auth (no circle)."""
    code = (
        "import sys\n"
        "import stormwatch.api.errors\n"
        "assert 'stormwatch.api.auth' not in sys.modules, 'errors imported auth'\n"
        "assert 'stormwatch.api.tokens' not in sys.modules, 'errors imported tokens'\n"
        "import stormwatch.api.tokens\n"
        "assert 'stormwatch.api.auth' not in sys.modules, 'tokens imported auth'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import sys\n"
        "import stormwatch.api.tokens\n"
        "assert 'stormwatch.api.errors' not in sys.modules, 'tokens imported errors'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
