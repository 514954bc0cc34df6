"""Import partner intelligence: STIX 2.1 bundles into ``intel_objects`` and ``intel_indicators``.

* Each file must be a STIX bundle (``{"type": "bundle", "objects": [...]}``) or a JSON list of
  objects. A malformed file or object stops that file with an :class:`InputError` naming the file
  and the object id (or its index); nothing of that file is stored.
* Objects are versioned by ``modified``: a newer version replaces the stored one, an older or equal
  one is counted and ignored, so re-importing is idempotent. ``revoked: true`` is kept as a flag.
* Indicators are then (re)compiled (:mod:`stormwatch.analyze.stix_patterns`) and tied to intrusion-sets
  through ``indicates`` relationships, directly or via a threat-actor / campaign / malware /
  infrastructure (``attributed-to`` and ``uses``). Unsupported patterns are stored with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stormwatch.analyze.stix_patterns import UnsupportedPattern, compile_pattern
from stormwatch.errors import InputError
from stormwatch.store import Store
from stormwatch.store.repos.intel import IndicatorRow, IntelObject, StoredVersion

__all__ = ["ImportSummary", "import_files", "rebuild_indicators"]

_ID = re.compile(r"^([a-z][a-z0-9-]*)--[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NO_SPEC_VERSION_OK = {"bundle"}


@dataclass(slots=True)
class ImportSummary:
    files: list[str] = field(default_factory=list)
    read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    older: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    indicators_supported: int = 0
    indicators_unsupported: list[dict[str, str]] = field(default_factory=list)
    indicators_revoked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "objects": {
                "read": self.read,
                "new": self.new,
                "updated": self.updated,
                "unchanged": self.unchanged,
                "older_ignored": self.older,
                "by_type": dict(sorted(self.by_type.items())),
            },
            "indicators": {
                "supported": self.indicators_supported,
                "unsupported": len(self.indicators_unsupported),
                "revoked": self.indicators_revoked,
                "unsupported_list": self.indicators_unsupported,
            },
        }


def _now() -> str:
    from stormwatch.store.records import now_iso

    return now_iso()


def _check_object(path: Path, i: int, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{path}: object #{i} is not a JSON object")
    oid = obj.get("id")
    where = f"{path}: object {oid!r}" if isinstance(oid, str) else f"{path}: object #{i}"
    if not isinstance(oid, str) or not _ID.match(oid):
        raise InputError(f"{where}: missing or malformed id (want TYPE--UUID)")
    typ = obj.get("type")
    if not isinstance(typ, str) or oid.split("--", 1)[0] != typ:
        raise InputError(f"{where}: type {typ!r} does not match the id")
    if typ not in _NO_SPEC_VERSION_OK and obj.get("spec_version", "2.1") != "2.1":
        raise InputError(f"{where}: spec_version {obj.get('spec_version')!r} (only STIX 2.1 is read)")
    for key in ("created", "modified", "valid_from", "valid_until"):
        if key in obj and not isinstance(obj[key], str):
            raise InputError(f"{where}: {key} must be a timestamp string")
    if typ == "indicator":
        if not isinstance(obj.get("pattern"), str) or not obj["pattern"].strip():
            raise InputError(f"{where}: indicator without a pattern")
        if "valid_from" not in obj:
            raise InputError(f"{where}: indicator without valid_from")
    if typ == "relationship":
        for key in ("relationship_type", "source_ref", "target_ref"):
            if not isinstance(obj.get(key), str):
                raise InputError(f"{where}: relationship without {key}")
    return obj


def read_bundle(path: Path) -> list[dict[str, Any]]:
    """The objects of one bundle file, checked; InputError names the file and the object."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON: {exc}") from exc
    if isinstance(data, dict):
        if data.get("type") != "bundle" or not isinstance(data.get("objects"), list):
            raise InputError(f"{path}: not a STIX bundle (want type 'bundle' with an 'objects' list)")
        objects = data["objects"]
    elif isinstance(data, list):
        objects = data
    else:
        raise InputError(f"{path}: not a STIX bundle")
    return [_check_object(path, i, o) for i, o in enumerate(objects)]


def _version_key(obj: dict[str, Any]) -> str:
    return str(obj.get("modified") or obj.get("created") or "")


def import_files(store: Store, paths: Sequence[Path]) -> ImportSummary:
    """Import bundles (all files checked first), then rebuild the indicator table."""
    summary = ImportSummary(files=[str(p) for p in paths])
    batches = [(p, read_bundle(p)) for p in paths]
    now = _now()
    existing = store.intel.object_versions()
    try:
        for path, objects in batches:
            for obj in objects:
                summary.read += 1
                summary.by_type[obj["type"]] = summary.by_type.get(obj["type"], 0) + 1
                raw = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
                key = _version_key(obj)
                old = existing.get(obj["id"])
                if old is not None:
                    if old.raw == raw:
                        summary.unchanged += 1
                        continue
                    if key < old.modified or (key == old.modified and "modified" in obj):
                        summary.older += 1  # an older (or conflicting same-version) copy: keep ours
                        continue
                    summary.updated += 1
                else:
                    summary.new += 1
                store.intel.put_object(
                    IntelObject(
                        id=obj["id"],
                        type=obj["type"],
                        spec_version=obj.get("spec_version"),
                        created=obj.get("created"),
                        modified=key or None,
                        revoked=bool(obj.get("revoked", False)),
                        name=obj.get("name"),
                        raw=raw,
                        source=str(path),
                        imported_at=now,
                    )
                )
                existing[obj["id"]] = StoredVersion(key, raw)
        rebuild_indicators(store, summary)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return summary


def _set_map(store: Store) -> dict[str, set[str]]:
    """For every object id an indicator may point at, the intrusion-sets it stands for."""
    rels = [r for r in store.intel.objects_of_type("relationship") if not r.get("revoked")]
    sets = {o["id"] for o in store.intel.objects_of_type("intrusion-set") if not o.get("revoked")}
    out: dict[str, set[str]] = {s: {s} for s in sets}
    for r in rels:  # campaign/threat-actor <-> intrusion-set
        src, dst, kind = r["source_ref"], r["target_ref"], r["relationship_type"]
        if kind == "attributed-to" and src in sets:  # intrusion-set -> threat-actor
            out.setdefault(dst, set()).add(src)
        elif kind == "attributed-to" and dst in sets:  # campaign -> intrusion-set
            out.setdefault(src, set()).add(dst)
        elif kind == "uses" and src in sets:  # intrusion-set uses malware / infrastructure / tool
            out.setdefault(dst, set()).add(src)
    return out


def rebuild_indicators(store: Store, summary: ImportSummary | None = None) -> None:
    """Recompute ``intel_indicators`` from the stored objects (patterns recompiled when changed)."""
    set_map = _set_map(store)
    indicates: dict[str, set[str]] = {}
    for r in store.intel.objects_of_type("relationship"):
        if r.get("revoked") or r["relationship_type"] != "indicates":
            continue
        indicates.setdefault(r["source_ref"], set()).update(set_map.get(r["target_ref"], set()))
    cached = store.intel.compiled_cache()
    rows: list[IndicatorRow] = []
    for ind in store.intel.objects_of_type("indicator"):
        pattern, ptype = str(ind["pattern"]), str(ind.get("pattern_type", "stix"))
        old = cached.get(ind["id"])
        reason: str | None
        compiled: str | None
        if old is not None and old.pattern == pattern:
            compiled, reason = old.compiled, old.unsupported_reason
        else:
            try:
                compiled = orjson.dumps(compile_pattern(pattern, ptype).to_json()).decode()
                reason = None
            except UnsupportedPattern as exc:
                compiled, reason = None, str(exc)
        revoked = bool(ind.get("revoked", False))
        if summary is not None:
            if revoked:
                summary.indicators_revoked += 1
            if reason is None:
                summary.indicators_supported += 1
            else:
                summary.indicators_unsupported.append({"id": ind["id"], "pattern": pattern, "reason": reason})
        conf = ind.get("confidence")
        rows.append(
            IndicatorRow(
                id=ind["id"],
                name=ind.get("name"),
                pattern=pattern,
                pattern_type=ptype,
                valid_from=ind.get("valid_from"),
                valid_until=ind.get("valid_until"),
                revoked=revoked,
                confidence=int(conf) if isinstance(conf, int | float) else None,
                indicator_types=tuple(sorted(ind.get("indicator_types") or [])),
                intrusion_sets=tuple(sorted(indicates.get(ind["id"], set()))),
                unsupported_reason=reason,
                compiled=compiled,
                modified=ind.get("modified"),
            )
        )
    store.intel.replace_indicators(rows, updated_at=_now())
