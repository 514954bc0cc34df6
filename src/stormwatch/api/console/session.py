"""Console sessions: a signed cookie that names the API token it was opened with, and CSRF tokens.

Signing in checks an API token once (:func:`stormwatch.api.tokens.verify_token`, the API's own
check); the session cookie then carries only the token's *id*, a random session id and the time it
was issued, signed with HMAC-SHA256 under a server secret. Every request re-reads the token by id,
so a revoked or expired token ends its sessions at once, and the principal (role, scopes) is always
the token's current one. The secret lives in a file created 0600 (next to a SQLite database, or in
``$XDG_DATA_HOME/stormwatch``; ``STORMWATCH_CONSOLE_SECRET_FILE`` names another path).

Each session has a CSRF token (an HMAC of its session id); every POST form carries it and it is
compared in constant time. The sign-in form, before there is a session, is protected the same way
by a short-lived pre-session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from stormwatch.errors import ConfigError

__all__ = [
    "COOKIE",
    "PRE_COOKIE",
    "SESSION_MAX_AGE_S",
    "SessionData",
    "SessionKeeper",
    "secret_path",
]

COOKIE = "sw_console"
PRE_COOKIE = "sw_console_pre"
#: a session lasts at most this long, whatever happens
SESSION_MAX_AGE_S = 8 * 3600
#: a sign-in form must be sent within this time of being shown
PRE_MAX_AGE_S = 3600
SECRET_ENV = "STORMWATCH_CONSOLE_SECRET_FILE"
#: the longest cookie value accepted (bounded read)
MAX_COOKIE_CHARS = 1024


def secret_path(db_url: str | None) -> Path:
    """Where the signing secret is kept for the database at ``db_url``."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return Path(env)
    from stormwatch.store import resolve_db_url

    url = resolve_db_url(db_url)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///") :].split("?", 1)[0]).resolve().parent / "console-secret"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stormwatch" / "console-secret"


def _load_or_create_secret(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path}: the console secret is readable by others (mode {stat.S_IMODE(mode):o})",
                hint=f"chmod 600 {path}",
            ) from None
        raw = path.read_bytes()[:256].strip()
        try:
            key = bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) < 32:
            raise ConfigError(
                f"{path}: not a console secret (64+ hex characters)", hint="delete it to make a new one"
            ) from None
        return key
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _load_or_create_secret(path)
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionData:
    """What a valid session cookie says."""

    sid: str
    token_id: str
    issued_at: float


class SessionKeeper:
    """Signs and checks cookies and CSRF tokens; remembers signed-out sessions until they expire."""

    def __init__(self, path: Path | None = None, *, key: bytes | None = None) -> None:
        self._path = path
        self._key = key
        self._lock = threading.Lock()
        self._signed_out: dict[str, float] = {}  # sid -> when its cookie would expire anyway

    @property
    def key(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    assert self._path is not None
                    self._key = _load_or_create_secret(self._path)
        return self._key

    def _mac(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self.key, f"{purpose}|{payload}".encode(), hashlib.sha256).digest())

    def _sign(self, purpose: str, data: dict[str, object]) -> str:
        payload = _b64(orjson.dumps(data))
        return f"{payload}.{self._mac(purpose, payload)}"

    def _unsign(self, purpose: str, value: str | None, max_age: float) -> dict[str, object] | None:
        if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            return None
        try:
            data = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("iat")
        if not isinstance(issued, int | float) or not 0 <= time.time() - issued <= max_age:
            return None
        return data

    # -- sessions

    def new_session(self, token_id: str) -> str:
        """A cookie value for a new session of ``token_id``."""
        return self._sign("session", {"sid": secrets.token_urlsafe(18), "tid": token_id, "iat": int(time.time())})

    def read_session(self, value: str | None) -> SessionData | None:
        data = self._unsign("session", value, SESSION_MAX_AGE_S)
        if data is None:
            return None
        sid, tid, iat = data.get("sid"), data.get("tid"), data.get("iat")
        if not isinstance(sid, str) or not isinstance(tid, str) or not isinstance(iat, int | float):
            return None
        with self._lock:
            if sid in self._signed_out:
                return None
        return SessionData(sid, tid, float(iat))

    def sign_out(self, session: SessionData) -> None:
        now = time.time()
        with self._lock:
            self._signed_out = {s: t for s, t in self._signed_out.items() if t > now}
            self._signed_out[session.sid] = session.issued_at + SESSION_MAX_AGE_S

    def csrf_token(self, session: SessionData) -> str:
        return self._mac("csrf", session.sid)

    def check_csrf(self, session: SessionData, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(str(sent), self.csrf_token(session))

    # -- the sign-in form (no session yet)

    def new_pre(self) -> str:
        return self._sign("pre", {"n": secrets.token_urlsafe(18), "iat": int(time.time())})

    def pre_csrf(self, pre_value: str | None) -> str | None:
        data = self._unsign("pre", pre_value, PRE_MAX_AGE_S)
        if data is None or not isinstance(data.get("n"), str):
            return None
        return self._mac("login", str(data["n"]))

    def check_pre_csrf(self, pre_value: str | None, sent: str | None) -> bool:
        expected = self.pre_csrf(pre_value)
        return expected is not None and bool(sent) and hmac.compare_digest(str(sent), expected)
