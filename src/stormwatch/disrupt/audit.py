"""The append-only, hash-chained audit log (table ``disrupt_audit``).

Every decision, delivery, case change, appeal and reinstatement is a frozen :class:`AuditEvent`
passed to :func:`track_event`, which appends it to the chain (in the caller's transaction, so the
entry commits or rolls back with the change it records) and then tells any extra listeners.

Entry ``n`` stores ``prev_hash`` (entry ``n-1``'s hash; 64 zeros for the first) and
``entry_hash = sha256(prev_hash + canonical_json(entry))`` where the canonical JSON holds ``ts,
actor, action, target, policy_id, policy_version, rule_version, model_version, evidence`` with
sorted keys (``evidence`` as the exact stored JSON text). :func:`verify` recomputes the chain and
names the first bad ``seq`` and the kind of tampering. Anyone able to rewrite the whole table can
recompute the chain, so keep an anchor (:func:`head`, written by ``stormwatch audit anchor``)
somewhere the database's writers cannot change.

The chain is stored by :class:`stormwatch.store.repos.audit.AuditRepo` (``store.audit``), the one
writer for every package; this module keeps the disrupt-facing names and the verification.
"""

from __future__ import annotations

from stormwatch.disrupt.models import AuditAnchor, AuditEntry, AuditVerification
from stormwatch.store import Store
from stormwatch.store.repos.audit import GENESIS, AuditEvent, add_listener, entry_hash

__all__ = ["GENESIS", "AuditEvent", "add_listener", "entry_hash", "head", "list_entries", "track_event", "verify"]


def track_event(store: Store, ev: AuditEvent, ts: str | None = None) -> AuditEntry:
    """Append ``ev`` to the chain inside the caller's transaction (the caller commits)."""
    return store.audit.append(ev, ts)


def list_entries(store: Store, *, target: str | None = None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    return store.audit.entries(target=target, limit=limit, offset=offset)


def head(store: Store) -> AuditAnchor | None:
    return store.audit.head()


def verify(store: Store, anchor: AuditAnchor | None = None) -> AuditVerification:
    """Recompute the chain; report the first changed, removed or reordered entry."""
    links = store.audit.chain()
    stored = {link.entry_hash: i for i, link in enumerate(links)}
    prev, prev_seq = GENESIS, 0
    tip = AuditAnchor(links[-1].seq, links[-1].entry_hash) if links else None

    def bad(seq: int, problem: str, message: str) -> AuditVerification:
        return AuditVerification(False, len(links), tip, seq, problem, message)

    for i, link in enumerate(links):
        seq = link.seq
        if entry_hash(link.prev_hash, link.ts, link.event, link.evidence_json) != link.entry_hash:
            return bad(seq, "changed", f"entry {seq} does not match its hash: its content was changed")
        if link.prev_hash != prev:
            where = stored.get(link.prev_hash)
            if where is not None and where > i:
                return bad(seq, "reordered", f"entry {seq} follows entry {links[where].seq} in the chain: moved")
            missing = prev_seq + 1
            return bad(missing, "removed", f"the entry before {seq} (expected seq {missing}) was removed")
        if seq != prev_seq + 1:
            return bad(prev_seq + 1, "removed", f"seq {prev_seq + 1} is missing")
        prev, prev_seq = link.entry_hash, seq
    if anchor is not None:
        found = next((link for link in links if link.seq == anchor.seq), None)
        if found is None:
            return bad(anchor.seq, "truncated", f"anchored entry {anchor.seq} is gone: the log was cut")
        if found.entry_hash != anchor.entry_hash:
            return bad(anchor.seq, "changed", f"entry {anchor.seq} differs from the anchor: chain rewritten")
    n = len(links)
    return AuditVerification(
        True, n, tip, message=f"{n} entries, chain intact" + (" and matches the anchor" if anchor else "")
    )
