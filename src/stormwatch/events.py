"""The canonical usage event and its validation.

Every ingest format maps its records onto the canonical dict shape of
``../shared/spec/usage-events.md`` and hands it to :func:`validate_event`, which either returns
an :class:`Event` ready for storage or raises :class:`~stormwatch.errors.RecordError` naming the
field and the reason. Validation is hand-written (not jsonschema) because it runs once per event
on the ingest hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stormwatch.errors import RecordError

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
MAX_ID_LEN = 256
#: the canonical event's columns, in the one order every tabular layout uses: the store's
#: ``events`` table (``stormwatch.store.sql.EVENT_COLUMNS`` adds ``run_id``) and the Arrow/Parquet
#: layout (``stormwatch.columnar.EVENT_FIELDS`` adds ``seq`` first and ``day`` last)
EVENT_COLUMNS = (
    "event_id",
    "ts",
    "account_id",
    "org_id",
    "end_user_id",
    "api_key_id",
    "ip",
    "user_agent",
    "model",
    "conversation_id",
    "refused",
    "messages",
    "prompt",
    "response",
    "attributes",
    "source",
)
#: the fields a canonical record may carry (``source`` is passed to :func:`validate_event`; others go to attributes)
KNOWN_FIELDS = frozenset(EVENT_COLUMNS) - {"source"}
OPTIONAL_STR = (
    "org_id",
    "end_user_id",
    "api_key_id",
    "ip",
    "user_agent",
    "model",
    "response",
    "conversation_id",
)


def type_name(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(slots=True)
class Event:
    """A validated usage event. ``ts`` is normalised to UTC (``...Z``, microseconds)."""

    event_id: str
    ts: str
    account_id: str
    org_id: str | None = None
    end_user_id: str | None = None
    api_key_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    model: str | None = None
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    response: str | None = None
    conversation_id: str | None = None
    refused: bool | None = None
    attributes: dict[str, Any] | None = None
    source: str = "canonical"

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form, leaving out empty optional fields."""
        out: dict[str, Any] = {"event_id": self.event_id, "ts": self.ts, "account_id": self.account_id}
        for name in OPTIONAL_STR:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.messages is not None:
            out["messages"] = self.messages
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.refused is not None:
            out["refused"] = self.refused
        if self.attributes:
            out["attributes"] = self.attributes
        return out

    def text(self) -> str:
        """The user-authored text of the request (what detectors score)."""
        if self.messages:
            return "\n".join(m["content"] for m in self.messages if m.get("role") == "user")
        return self.prompt or ""


def normalize_ts(value: object, field: str = "ts") -> str:
    """Parse an RFC 3339 timestamp (or epoch seconds) and return it in UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if isinstance(value, bool):
        raise RecordError(f"expected an RFC 3339 string, got {type_name(value)}", field=field)
    if isinstance(value, int | float):
        try:
            dt = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise RecordError(f"epoch timestamp out of range: {value!r}", field=field) from exc
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as exc:
            raise RecordError(f"not an RFC 3339 date-time: {value[:64]!r}", field=field) from exc
        if value[-1:] == "Z" and len(value) <= 27 and value[10:11] == "T":
            # already UTC: only the fraction needs padding (the hot path of canonical logs)
            frac = value[20:-1] if value[19:20] == "." else ""
            return f"{value[:19]}.{frac.ljust(6, '0')[:6]}Z"
        if dt.tzinfo is None:
            raise RecordError(f"date-time has no offset or Z: {value[:64]!r}", field=field)
        dt = dt.astimezone(UTC)
    else:
        raise RecordError(f"expected an RFC 3339 string, got {type_name(value)}", field=field)
    return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _require_id(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise RecordError("required field is missing", field=field)
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {type_name(value)}", field=field)
    if not value:
        raise RecordError("must not be empty", field=field)
    if len(value) > MAX_ID_LEN:
        raise RecordError(f"longer than {MAX_ID_LEN} characters ({len(value)})", field=field)
    return value


def _optional_strings(obj: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = obj.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise RecordError(f"expected a string, got {type_name(value)}", field=name)
            out[name] = value
    return out


def _attributes(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """``attributes`` checked, with every unknown top-level field folded into it (nothing is dropped)."""
    attributes = obj.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise RecordError(f"expected an object, got {type_name(attributes)}", field="attributes")
    extra = [k for k in obj if k not in known]
    if extra:
        attributes = dict(attributes or {})
        for k in extra:
            attributes[k] = obj[k]
    return attributes or None


def _messages(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RecordError(f"expected an array, got {type_name(value)}", field="messages")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RecordError(f"expected an object, got {type_name(msg)}", field=where)
        role = msg.get("role")
        content = msg.get("content")
        if role not in ROLES:
            raise RecordError(f"role must be one of {sorted(ROLES)}, got {role!r}"[:200], field=f"{where}.role")
        if not isinstance(content, str):
            raise RecordError(f"expected a string, got {type_name(content)}", field=f"{where}.content")
        out.append(msg)  # kept whole: fields beyond role/content (name, tool_calls, ...) are not lost
    return out


def validate_event(obj: object, source: str = "canonical") -> Event:
    """Check one canonical record and return the :class:`Event`; raise RecordError otherwise.

    Unknown top-level fields are kept under ``attributes`` (the spec says so).
    """
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type_name(obj)}")
    event_id = _require_id(obj, "event_id")
    account_id = _require_id(obj, "account_id")
    if "ts" not in obj:
        raise RecordError("required field is missing", field="ts")
    ts = normalize_ts(obj["ts"])
    messages = None
    prompt = None
    if obj.get("messages") is not None:
        messages = _messages(obj["messages"])
    if obj.get("prompt") is not None:
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            raise RecordError(f"expected a string, got {type_name(prompt)}", field="prompt")
    if messages is None and prompt is None:
        raise RecordError("one of messages or prompt is required", field="messages")
    kwargs = _optional_strings(obj, OPTIONAL_STR)
    refused = obj.get("refused")
    if refused is not None and not isinstance(refused, bool):
        raise RecordError(f"expected a boolean, got {type_name(refused)}", field="refused")
    attributes = _attributes(obj, KNOWN_FIELDS)
    return Event(
        event_id=event_id,
        ts=ts,
        account_id=account_id,
        messages=messages,
        prompt=prompt,
        refused=refused,
        attributes=attributes,
        source=source,
        **kwargs,
    )


ACCOUNT_STR_FIELDS = (
    "email_domain",
    "email_hash",
    "payment_fingerprint",
    "phone_hash",
    "device_id",
    "signup_ip",
    "org_id",
    "country",
    "status",
)
ACCOUNT_STATUSES = frozenset({"active", "suspended", "terminated"})
ACCOUNT_KNOWN = frozenset({"account_id", "created_at", "attributes", *ACCOUNT_STR_FIELDS})


@dataclass(slots=True)
class Account:
    account_id: str
    created_at: str | None = None
    email_domain: str | None = None
    email_hash: str | None = None
    payment_fingerprint: str | None = None
    phone_hash: str | None = None
    device_id: str | None = None
    signup_ip: str | None = None
    country: str | None = None
    org_id: str | None = None
    status: str | None = None
    attributes: dict[str, Any] | None = None


def validate_account(obj: object) -> Account:
    """Check one account record (``account.schema.json``); raise RecordError otherwise."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type_name(obj)}")
    account_id = _require_id(obj, "account_id")
    kwargs = _optional_strings(obj, ACCOUNT_STR_FIELDS)
    country = kwargs.get("country")
    if country is not None and not (len(country) == 2 and country.isascii() and country.isupper()):
        raise RecordError(f"expected an ISO 3166-1 alpha-2 code, got {country[:16]!r}", field="country")
    status = kwargs.get("status")
    if status is not None and status not in ACCOUNT_STATUSES:
        raise RecordError(f"must be one of {sorted(ACCOUNT_STATUSES)}, got {status[:32]!r}", field="status")
    if obj.get("email_domain") is not None:
        kwargs["email_domain"] = kwargs["email_domain"].lower()
    created = obj.get("created_at")
    if created is not None:
        kwargs["created_at"] = normalize_ts(created, field="created_at")
    return Account(account_id=account_id, attributes=_attributes(obj, ACCOUNT_KNOWN), **kwargs)


@dataclass(slots=True)
class Rejected:
    """A record that could not become an event or account: kept whole, with where and why.

    Parsers yield it (:mod:`stormwatch.ingest.formats`), the store quarantines it
    (``store.add_quarantine``); it lives here, beside the records it failed to become, so the store
    does not import ingest.
    """

    source: str
    line: int | None
    reason: str
    field: str | None = None
    raw: bytes = b""

    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source
