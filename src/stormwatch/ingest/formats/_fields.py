"""Typed, path-aware field access for the ingest formats: errors name the *source* field
(``request.body.messages[2].content``), not the canonical one; and the event builder they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stormwatch.errors import RecordError
from stormwatch.events import Event, normalize_ts, type_name, validate_event
from stormwatch.ingest.formats._secrets import (
    redact_raw,
    scrub,
)
from stormwatch.ingest.formats.base import (
    Rejected,
)

JSON = dict[str, Any]

# --------------------------------------------------------------------------------------------
# typed access with source paths


def join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """``obj[key]`` as a non-empty string, ``None`` when absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {type_name(value)}", field=join(path, key))
    return value


def opt_obj(obj: Mapping[str, Any], key: str, path: str) -> JSON | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(f"expected an object, got {type_name(value)}", field=join(path, key))
    return value


def opt_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise RecordError(f"expected an array, got {type_name(value)}", field=join(path, key))
    return value


def first_str(*candidates: tuple[Mapping[str, Any] | None, str, str]) -> tuple[str | None, str | None]:
    """The first non-empty string among ``(obj, key, path)`` candidates, with the field path it came from."""
    for obj, key, path in candidates:
        if obj is None:
            continue
        value = opt_str(obj, key, path)
        if value is not None:
            return value, join(path, key)
    return None, None


def parse_ts(value: object, path: str) -> str:
    """RFC 3339 or epoch seconds -> canonical UTC string; errors name ``path``."""
    return normalize_ts(value, field=path)


def reject(source: str, line: int | None, reason: str, fld: str | None, raw: bytes) -> Rejected:
    return Rejected(source, line, reason, fld, redact_raw(raw))


# --------------------------------------------------------------------------------------------
# building the event


def build_event(fields: JSON, origins: Mapping[str, str], source: str) -> Event:
    """``validate_event`` on a canonical dict; a failure's field is translated back to its source path."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if fields.get("attributes") is not None:
        fields["attributes"] = scrub(fields["attributes"])
    try:
        return validate_event(fields, source=source)
    except RecordError as exc:
        fld = exc.field
        if fld is not None:
            head, sep, rest = fld.partition("[")
            if head in origins:
                fld = origins[head] + (sep + rest if sep else "")
        raise RecordError(exc.reason, field=fld) from exc
