"""MISP: write a MISP feed from a (policy-redacted) STIX export; import MISP events as STIX intel.

Feed layout (what MISP's "feeds" use; written by PyMISP, :func:`write_feed`): ``manifest.json``
(``{event-uuid: {Orgc, Tag, info, date, analysis, threat_level_id, timestamp}}``), one
``<event-uuid>.json`` per event (``{"Event": {...}}``) and ``hashes.csv`` (``md5(value),event-uuid``).

One event per exported actor (intrusion-set) or unattributed cluster (grouping): TLP and galaxy
tags (``misp-galaxy:threat-actor``, ``misp-galaxy:mitre-atlas-attack-pattern``), indicator values
as attributes (``ip-src``, ``domain``, ``url``, ``email-src``, ``to_ids``), keyed hashes of
identifiers as ``text`` attributes, pseudonymous accounts as ``user-account`` objects. The feed
is built from the exported bundle, so it carries exactly what the sharing policy let out.
"""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import InputError
from stormwatch.intel.ids import parse_time, stix_time
from stormwatch.intel.tlp import TLP2_IDS, Tlp, marking_object, object_tlp
from stormwatch.vocab import actor_info, ttps

MISP_NS = uuid.UUID("3f0a6c1e-5b7d-4e2a-9c8f-1d2e3a4b5c6d")
USER_ACCOUNT_TEMPLATE = ("49606b06-22f0-4ac8-8eee-2f12ad46f3d3", "6")
_PATTERN = re.compile(r"\[(ipv4-addr|ipv6-addr|domain-name|url|email-addr):value\s*=\s*'((?:[^'\\]|\\.)*)'\]")
_ATTR_TYPE = {
    "ipv4-addr": ("ip-src", "Network activity"),
    "ipv6-addr": ("ip-src", "Network activity"),
    "domain-name": ("domain", "Network activity"),
    "url": ("url", "Network activity"),
    "email-addr": ("email-src", "Payload delivery"),
}


def _u(*parts: str) -> str:
    return str(uuid.uuid5(MISP_NS, "|".join(parts)))


def _ts(s: str | None) -> str:
    return str(int(parse_time(s).timestamp())) if s else str(int(datetime.now(UTC).timestamp()))


def bundle_to_events(bundle: dict[str, Any], org_name: str, org_uuid: str | None = None) -> list[dict[str, Any]]:
    """MISP events (``{"Event": ...}``) for the actors / clusters of an exported bundle."""
    objs = {o["id"]: o for o in bundle.get("objects", [])}
    org = {"name": org_name, "uuid": org_uuid or _u("org", org_name)}
    anchors = [o for o in objs.values() if o["type"] in ("intrusion-set", "grouping")]
    rels = [o for o in objs.values() if o["type"] == "relationship"]
    events = []
    for a in sorted(anchors, key=lambda o: o["id"]):
        level = object_tlp(a)
        ev_uuid = a["id"].split("--", 1)[1]
        tags = [{"name": f"tlp:{level.label}"}]
        name = a.get("name", "cluster")
        if a["type"] == "intrusion-set":
            info = actor_info(name)
            galaxy = info.misp_galaxy if info and info.misp_galaxy else name
            tags.append({"name": f'misp-galaxy:threat-actor="{galaxy}"'})
        ext: dict[str, Any] = next(iter((a.get("extensions") or {}).values()), {})
        for tid in ext.get("llm_ttps", []):
            t = ttps().get(tid)
            tags.append({"name": f'stormwatch:llm-ttp="{tid}"'})
            for aid, aname in t.atlas if t else ():
                tags.append({"name": f'misp-galaxy:mitre-atlas-attack-pattern="{aname} - {aid}"'})
        attributes: list[dict[str, Any]] = []
        misp_objects: list[dict[str, Any]] = []
        ts = _ts(a.get("modified"))
        linked = {r["source_ref"] for r in rels if r["target_ref"] == a["id"]}
        linked |= set(a.get("object_refs", []))
        for oid in sorted(linked):
            o = objs.get(oid)
            if o is None:
                continue
            if o["type"] == "indicator":
                for m in _PATTERN.finditer(o["pattern"]):
                    value = m.group(2).replace("\\'", "'").replace("\\\\", "\\")
                    atype, cat = _ATTR_TYPE[m.group(1)]
                    attributes.append(
                        {
                            "uuid": _u(ev_uuid, atype, value),
                            "type": atype,
                            "category": cat,
                            "value": value,
                            "to_ids": True,
                            "comment": o.get("name", ""),
                            "timestamp": ts,
                            "distribution": "5",
                            "first_seen": o.get("valid_from"),
                            "last_seen": o.get("valid_until"),
                            "Tag": [{"name": f"tlp:{object_tlp(o).label}"}],
                        }
                    )
            elif o["type"] == "user-account":
                obj_uuid = _u(ev_uuid, "user-account", o["user_id"])
                misp_objects.append(
                    {
                        "name": "user-account",
                        "meta-category": "misc",
                        "template_uuid": USER_ACCOUNT_TEMPLATE[0],
                        "template_version": USER_ACCOUNT_TEMPLATE[1],
                        "uuid": obj_uuid,
                        "timestamp": ts,
                        "distribution": "5",
                        "comment": "pseudonymous AI-platform account (keyed hash of the platform's id)",
                        "Attribute": [
                            {
                                "uuid": _u(obj_uuid, "user-id"),
                                "object_relation": "user-id",
                                "type": "text",
                                "category": "Other",
                                "value": o["user_id"],
                                "to_ids": False,
                                "timestamp": ts,
                                "distribution": "5",
                            }
                        ],
                    }
                )
        for s in objs.values():
            if s["type"] == "sighting" and s.get("sighting_of_ref") == a["id"]:
                sx: dict[str, Any] = next(iter((s.get("extensions") or {}).values()), {})
                for h in sx.get("hashed_identifiers", []):
                    attributes.append(
                        {
                            "uuid": _u(ev_uuid, "text", h),
                            "type": "text",
                            "category": "Other",
                            "value": h,
                            "to_ids": False,
                            "comment": "keyed hash of an identifier (match with the trust group's key)",
                            "timestamp": ts,
                            "distribution": "5",
                        }
                    )
        date = (a.get("first_seen") or a.get("created") or stix_time(datetime.now(UTC)))[:10]
        event = {
            "uuid": ev_uuid,
            "info": f"{name}: state-affiliated use of an AI service"
            if a["type"] == "intrusion-set"
            else "Unattributed cluster of AI-service misuse",
            "date": date,
            "threat_level_id": "2",
            "analysis": "2",
            "distribution": "3",
            "published": True,
            "timestamp": ts,
            "publish_timestamp": ts,
            "Orgc": org,
            "Tag": tags,
            "Attribute": attributes,
            "Object": misp_objects,
        }
        events.append({"Event": event})
    return events


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def write_feed(events: Iterable[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """Write ``manifest.json``, ``<uuid>.json`` per event and ``hashes.csv`` into ``out_dir``, with PyMISP.

    Each event is loaded into a :class:`pymisp.MISPEvent` (which checks attribute types, categories
    and object templates) and written by its ``to_feed`` / ``manifest`` / ``attributes_hashes``, the
    same code MISP's own feed generator uses, so the feed follows PyMISP's format as it evolves.
    """
    try:
        from pymisp import MISPEvent
    except ImportError as exc:  # pragma: no cover - pymisp is in the misp extra and in the lock file
        raise InputError("writing a MISP feed needs PyMISP: pip install 'stormwatch[misp]'") from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    hashes: list[tuple[str, str]] = []
    n = 0
    for wrapped in events:
        ev = MISPEvent()
        ev.from_dict(**_drop_none(wrapped["Event"]))
        feed = ev.to_feed(with_meta=True)
        body = feed["Event"]
        manifest.update(body.pop("_manifest"))
        hashes += [(h, str(ev.uuid)) for h in body.pop("_hashes")]
        (out_dir / f"{ev.uuid}.json").write_bytes(orjson.dumps(feed, option=orjson.OPT_INDENT_2))
        n += 1
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    with open(out_dir / "hashes.csv", "w", newline="") as f:
        w = csv.writer(f)
        for row in hashes:
            w.writerow(row)
    return {"events": n, "hashes": len(hashes), "dir": str(out_dir)}


# -- import ------------------------------------------------------------------------------------
_TAG_ACTOR = re.compile(r'^misp-galaxy:(?:threat-actor|mitre-intrusion-set|stix-2\.1-intrusion-set)="(.+?)"$')
_IMPORT_TYPES = {
    "ip-src": "ipv4-addr",
    "ip-dst": "ipv4-addr",
    "domain": "domain-name",
    "hostname": "domain-name",
    "url": "url",
    "email-src": "email-addr",
    "email": "email-addr",
    "email-dst": "email-addr",
}


def read_events(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """MISP events from files (``{"Event": ..}``, a list of them, or ``{"response": [...]}``) or feed dirs."""
    out: list[dict[str, Any]] = []
    for p in paths:
        files = sorted(x for x in p.glob("*.json") if x.name != "manifest.json") if p.is_dir() else [p]
        for f in files:
            try:
                data = orjson.loads(f.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise InputError(f"{f}: not a MISP event file: {exc}") from exc
            items = data.get("response", [data]) if isinstance(data, dict) else data
            for item in items if isinstance(items, list) else []:
                ev = item.get("Event", item) if isinstance(item, dict) else None
                if not isinstance(ev, dict) or "uuid" not in ev:
                    raise InputError(f"{f}: not a MISP event (want {{'Event': {{'uuid': ..}}}})")
                out.append(ev)
    return out


def _level(tags: list[dict[str, Any]]) -> Tlp:
    level: Tlp | None = None
    for t in tags:
        name = str(t.get("name", ""))
        if name.lower().startswith("tlp:"):
            try:
                lv = Tlp.parse(name)
            except ValueError:
                lv = Tlp.RED
            level = lv if level is None else max(level, lv)
    return level if level is not None else Tlp.AMBER


def events_to_stix(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """STIX 2.1 objects (intrusion-sets, indicators, ``indicates``) for MISP events."""
    objs: dict[str, dict[str, Any]] = {}
    for ev in events:
        ev_tags = list(ev.get("Tag") or [])
        level = _level(ev_tags)
        mark = [TLP2_IDS[level]]
        objs.setdefault(TLP2_IDS[level], marking_object(level))
        created = (
            stix_time(datetime.fromtimestamp(int(ev.get("timestamp") or 0), UTC))
            if ev.get("timestamp")
            else (str(ev.get("date", "1970-01-01")) + "T00:00:00.000Z")
        )
        org = (ev.get("Orgc") or {}).get("name", "MISP")
        ident = f"identity--{_u('identity', org)}"
        objs.setdefault(
            ident,
            {"type": "identity", "spec_version": "2.1", "id": ident, "created": created, "modified": created,
             "name": org, "identity_class": "organization"},
        )  # fmt: skip
        sets = []
        for t in ev_tags:
            m = _TAG_ACTOR.match(str(t.get("name", "")))
            if m:
                info = actor_info(m.group(1))
                name = info.name if info else m.group(1)
                sid = f"intrusion-set--{_u('intrusion-set', name.lower())}"
                o: dict[str, Any] = {"type": "intrusion-set", "spec_version": "2.1", "id": sid}
                o.update(created=created, modified=created, name=name, created_by_ref=ident, object_marking_refs=mark)
                if info and info.aliases:
                    o["aliases"] = list(info.aliases)
                objs[sid] = o
                sets.append(sid)
        attrs = list(ev.get("Attribute") or []) + [
            a for ob in ev.get("Object") or [] for a in ob.get("Attribute") or []
        ]
        for a in attrs:
            sco = _IMPORT_TYPES.get(str(a.get("type")))
            if sco is None or not a.get("value"):
                continue
            value = str(a["value"])
            if sco == "ipv4-addr" and ":" in value:
                sco = "ipv6-addr"
            level_a = max(level, _level(list(a.get("Tag") or [])))
            pattern_value = value.replace("\\", "\\\\").replace("'", "\\'")
            iid = f"indicator--{_u('indicator', str(a.get('uuid') or value))}"
            objs[iid] = {
                "type": "indicator", "spec_version": "2.1", "id": iid, "created": created, "modified": created,
                "name": f"MISP {a.get('type')}: {value}", "indicator_types": ["malicious-activity"],
                "pattern": f"[{sco}:value = '{pattern_value}']", "pattern_type": "stix", "valid_from": created,
                "created_by_ref": ident, "object_marking_refs": [TLP2_IDS[level_a]],
            }  # fmt: skip
            objs.setdefault(TLP2_IDS[level_a], marking_object(level_a))
            for sid in sets:
                rid = f"relationship--{_u('rel', iid, sid)}"
                objs[rid] = {
                    "type": "relationship", "spec_version": "2.1", "id": rid, "created": created,
                    "modified": created, "relationship_type": "indicates", "source_ref": iid, "target_ref": sid,
                    "created_by_ref": ident, "object_marking_refs": [TLP2_IDS[level_a]],
                }  # fmt: skip
    return list(objs.values())
