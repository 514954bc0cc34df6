"""What the TAXII server accepts as a posted STIX 2.1 object (one bad object rejects the envelope)."""

from __future__ import annotations

import re
from typing import Any

from stormwatch.intel.ids import parse_time

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ID_RE = re.compile(r"^([a-z][a-z0-9-]{1,248}[a-z0-9])--" + _UUID + "$")
SCO_TYPES = frozenset(
    {
        "artifact", "autonomous-system", "directory", "domain-name", "email-addr", "email-message", "file",
        "ipv4-addr", "ipv6-addr", "mac-addr", "mutex", "network-traffic", "process", "software", "url",
        "user-account", "windows-registry-key", "x509-certificate",
    }
)  # fmt: skip
#: types whose re-post without ``modified`` is the same object (no new version)
UNVERSIONED = SCO_TYPES | {"marking-definition"}


def check_object(obj: Any, i: int) -> tuple[str | None, dict[str, Any] | None]:
    """(error message, object) for the ``i``-th posted object."""
    if not isinstance(obj, dict):
        return f"object #{i} is not a JSON object", None
    oid = obj.get("id")
    if not isinstance(oid, str) or not ID_RE.match(oid):
        return f"object #{i}: missing or malformed id", None
    typ = obj.get("type")
    if typ != oid.split("--", 1)[0]:
        return f"{oid}: type {typ!r} does not match the id", None
    if obj.get("spec_version") != "2.1":
        return f"{oid}: spec_version must be '2.1' (got {obj.get('spec_version')!r})", None
    for key in ("created", "modified"):
        if key in obj:
            if not isinstance(obj[key], str):
                return f"{oid}: {key} must be a timestamp", None
            try:
                parse_time(obj[key])
            except (ValueError, OverflowError):
                return f"{oid}: {key} {obj[key]!r} is not a timestamp", None
    if typ not in SCO_TYPES:
        if "created" not in obj:
            return f"{oid}: created is required", None
        if typ != "marking-definition" and "modified" not in obj:
            return f"{oid}: modified is required", None
        if "modified" in obj and parse_time(obj["modified"]) < parse_time(obj["created"]):
            return f"{oid}: modified is earlier than created", None
    refs = obj.get("object_marking_refs", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        return f"{oid}: object_marking_refs must be a list of ids", None
    cbr = obj.get("created_by_ref")
    if cbr is not None and not (isinstance(cbr, str) and cbr.startswith("identity--") and ID_RE.match(cbr)):
        return f"{oid}: created_by_ref must be an identity id", None
    if typ == "indicator":
        err = check_indicator(obj)
        if err is not None:
            return f"{oid}: {err}", None
    return None, obj


def check_indicator(obj: dict[str, Any]) -> str | None:
    """Why an indicator is not a valid STIX 2.1 indicator (None: it is): pattern, pattern_type, valid_from."""
    pattern, ptype = obj.get("pattern"), obj.get("pattern_type")
    if not isinstance(pattern, str) or not pattern.strip():
        return "an indicator needs a pattern"
    if not isinstance(ptype, str) or not ptype:
        return "an indicator needs a pattern_type"
    valid_from = obj.get("valid_from")
    if not isinstance(valid_from, str):
        return "an indicator needs valid_from"
    try:
        parse_time(valid_from)
    except (ValueError, OverflowError):
        return f"valid_from {valid_from!r} is not a timestamp"
    if ptype == "stix":
        from stix2patterns.validator import run_validator

        try:
            errors = run_validator(pattern, stix_version="2.1")
        except Exception as exc:  # the validator raises for some inputs instead of reporting them
            errors = [str(exc) or type(exc).__name__]
        if errors:
            return f"pattern {pattern[:200]!r} is not a valid STIX 2.1 pattern: {errors[0]}"
    return None
