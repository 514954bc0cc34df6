"""The secrets rule of the ingest formats: authorization headers, API-key-looking fields and bearer
tokens are never kept, neither in an event's attributes nor in a quarantined raw record."""

from __future__ import annotations

import hashlib
import re
from typing import Any

# --------------------------------------------------------------------------------------------
# secrets

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "api_key",
        "apikey",
        "x_api_key",
        "openai_api_key",
        "azure_api_key",
        "anthropic_api_key",
        "x_goog_api_key",
        "ocp_apim_subscription_key",
        "api_secret",
        "secret",
        "client_secret",
        "secret_key",
        "password",
        "passwd",
        "cookie",
        "set_cookie",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "bearer",
        "private_key",
        "user_api_key",
        "api_token",
        "auth_token",
        "session_token",
        "x_litellm_api_key",
        "litellm_api_key",
    }
)
_SECRET_SUFFIX = re.compile(r"(?:^|_)(?:api_?key|secret|password|token|authorization)$")
_SECRET_VALUE = re.compile(
    r"^\s*(?:bearer\s+\S+|basic\s+\S{8,}|sk-[A-Za-z0-9_\-]{16,}|sk_(?:live|test)_\S{8,})", re.IGNORECASE
)
REDACTED = "[redacted]"


def is_secret_key(key: str) -> bool:
    norm = key.strip().lower().replace("-", "_")
    return norm in _SECRET_KEYS or _SECRET_SUFFIX.search(norm) is not None


def looks_like_secret(value: str) -> bool:
    return _SECRET_VALUE.match(value) is not None


def scrub(value: Any) -> Any:
    """A copy of ``value`` without secret-named keys; secret-looking strings become ``[redacted]``."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not (isinstance(k, str) and is_secret_key(k))}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str) and looks_like_secret(value):
        return REDACTED
    return value


def safe_key_id(value: str) -> str:
    """An API key id as given, unless it is the key itself: then a SHA-256 fingerprint of it."""
    if looks_like_secret(value):
        return "sha256:" + hashlib.sha256(value.strip().encode("utf-8")).hexdigest()[:32]
    return value


_RAW_SECRET_FIELD = re.compile(
    rb'("(?:[A-Za-z0-9_\-]*(?:authorization|api[_-]?key|apikey|secret|password|token)|cookie|set-cookie)"'
    rb'\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)
_RAW_SECRET_VALUE = re.compile(rb"(?:Bearer\s+[A-Za-z0-9._~+/=\-]{8,}|sk-[A-Za-z0-9_\-]{16,})", re.IGNORECASE)


def redact_raw(raw: bytes) -> bytes:
    """``raw`` with secret values replaced, for quarantine. Unchanged (byte for byte) when it holds none."""
    out = _RAW_SECRET_FIELD.sub(rb'\1"[redacted]"', raw)
    out = _RAW_SECRET_VALUE.sub(b"[redacted]", out)
    return out
