"""What the commands and the API call: export, publish to a TAXII collection, MISP import."""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stormwatch.intel.findings import Findings, load_findings
from stormwatch.intel.ids import StoreRegistry
from stormwatch.intel.misp import bundle_to_events, events_to_stix, read_events, write_feed
from stormwatch.intel.sharing_policy import SharingPolicy
from stormwatch.intel.stix_export import ExportResult, build_bundle
from stormwatch.intel.taxii import server
from stormwatch.intel.tlp import Tlp
from stormwatch.store import Store
from stormwatch.store.repos.intel import ExportRecord


def deployment_secret(store: Store) -> bytes:
    """One random secret per database: keys hashes of groups without a configured key."""
    stored = store.intel.secret("hmac")
    if stored is None:
        stored = store.intel.add_secret("hmac", os.urandom(32).hex(), datetime.now(UTC).isoformat())
    return bytes.fromhex(stored)


def with_store_secret(store: Store, policy: SharingPolicy) -> SharingPolicy:
    from dataclasses import replace

    return replace(policy, fallback_secret=deployment_secret(store))


def export_bundle(
    store: Store,
    policy: SharingPolicy,
    *,
    recipient: str | None = None,
    findings: Findings | None = None,
    now: datetime | None = None,
) -> ExportResult:
    """Build the policy-checked bundle with stable ids (kept in ``share_stix_ids``)."""
    policy = with_store_secret(store, policy)
    registry = StoreRegistry(store)
    result = build_bundle(
        findings if findings is not None else load_findings(store),
        policy,
        recipient=recipient,
        registry=registry,
        now=now,
    )
    registry.flush()
    store.commit()
    return result


def _record(store: Store, fmt: str, recipient: str | None, destination: str, n: int, max_tlp: Tlp | None) -> str:
    eid = str(uuid.uuid4())
    store.intel.record_export(
        ExportRecord(
            eid, fmt, recipient, destination, n, max_tlp.label if max_tlp else None, datetime.now(UTC).isoformat()
        )
    )
    store.commit()
    return eid


def export_stix_file(
    store: Store, policy: SharingPolicy, out: Path, *, recipient: str | None = None, findings: Findings | None = None
) -> dict[str, Any]:
    result = export_bundle(store, policy, recipient=recipient, findings=findings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(orjson.dumps(result.bundle, option=orjson.OPT_INDENT_2))
    tmp.replace(out)
    eid = _record(store, "stix", recipient, str(out), len(result.bundle["objects"]), result.max_tlp)
    return _summary(result, eid, str(out))


def export_misp_feed(
    store: Store,
    policy: SharingPolicy,
    out_dir: Path,
    *,
    recipient: str | None = None,
    findings: Findings | None = None,
) -> dict[str, Any]:
    result = export_bundle(store, policy, recipient=recipient, findings=findings)
    feed = write_feed(bundle_to_events(result.bundle, policy.producer_name), out_dir)
    eid = _record(store, "misp-feed", recipient, str(out_dir), feed["events"], result.max_tlp)
    return {**_summary(result, eid, str(out_dir)), "misp": feed}


def _summary(result: ExportResult, eid: str, dest: str) -> dict[str, Any]:
    return {
        "export_id": eid,
        "destination": dest,
        "objects": len(result.bundle["objects"]),
        "by_type": dict(sorted(result.by_type.items())),
        "clusters": result.clusters,
        "clusters_withheld": result.skipped_clusters,
        "max_tlp": result.max_tlp.label if result.max_tlp else None,
    }


@dataclass(slots=True)
class Published:
    collection: str
    status: dict[str, Any]
    red_objects: int


def publish(
    store: Store,
    policy: SharingPolicy,
    collection_id: str,
    *,
    recipient: str | None = None,
    findings: Findings | None = None,
) -> Published:
    """Export for ``recipient`` into a TAXII collection; TLP:RED objects readable only by its principals."""
    rcpt = policy.recipient(recipient)
    result = export_bundle(store, policy, recipient=recipient, findings=findings)
    principals = list(rcpt.principals) if rcpt is not None else []
    red_ids = {oid: principals for oid, lv in result.levels.items() if lv == Tlp.RED}
    if red_ids and not principals:  # pragma: no cover - build_bundle never emits RED without a named recipient
        raise ValueError("TLP:RED objects need a named recipient")
    col = store.taxii.collection(collection_id)
    if col is None:
        raise server.TaxiiError(404, "Unknown collection", collection_id)
    status = server.add_objects(
        store,
        col.root,
        collection_id,
        server.Caller("stormwatch:publisher", trusted=True, actor="system:share-publish"),
        result.bundle["objects"],
        red_audience=principals or ["stormwatch:nobody"],
        audience_for=red_ids,
    )
    _record(store, "taxii", recipient, collection_id, len(result.bundle["objects"]), result.max_tlp)
    return Published(collection_id, status, len(red_ids))


def import_misp(store: Store, paths: list[Path]) -> dict[str, Any]:
    """Convert MISP events to STIX and hand them to the intel importer."""
    from stormwatch.intel.importer import import_files

    events = read_events(paths)
    objects = events_to_stix(events)
    with tempfile.TemporaryDirectory(prefix="stormwatch-misp-") as tmp:
        path = Path(tmp) / "misp-events.json"
        path.write_bytes(orjson.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}))
        summary = import_files(store, [path])
    return {"events": len(events), "stix_objects": len(objects), "import": summary.to_dict()}
