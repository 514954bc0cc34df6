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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.disrupt.models import AuditAnchor, AuditEntry, AuditVerification, iso, utcnow
from stormwatch.store import Store

GENESIS = "0" * 64
_COLS = (
    "seq, ts, actor, action, target, policy_id, policy_version, rule_version, model_version, "
    "evidence, prev_hash, entry_hash"
)
_listeners: list[Callable[[AuditEntry], None]] = []


@dataclass(frozen=True)
class AuditEvent:
    """Who or what (``actor``) did what (``action``) to what (``target``), with the versions involved."""

    actor: str
    action: str
    target: str
    evidence: Any = None
    policy_id: str | None = None
    policy_version: str | None = None
    rule_version: str | None = None
    model_version: str | None = None


def add_listener(fn: Callable[[AuditEntry], None]) -> None:
    """Also send every appended entry to ``fn`` (syslog, a SIEM, ...), after it is in the chain."""
    _listeners.append(fn)


def entry_hash(prev_hash: str, ts: str, ev: AuditEvent, evidence_json: str) -> str:
    body = {
        "ts": ts,
        "actor": ev.actor,
        "action": ev.action,
        "target": ev.target,
        "policy_id": ev.policy_id,
        "policy_version": ev.policy_version,
        "rule_version": ev.rule_version,
        "model_version": ev.model_version,
        "evidence": evidence_json,
    }
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def track_event(store: Store, ev: AuditEvent, ts: str | None = None) -> AuditEntry:
    """Append ``ev`` to the chain inside the caller's transaction (the caller commits)."""
    if store.dialect == "postgres":
        store.execute("LOCK TABLE disrupt_audit IN EXCLUSIVE MODE")
    last = store.query("SELECT seq, entry_hash FROM disrupt_audit ORDER BY seq DESC LIMIT 1")
    seq, prev = (int(last[0][0]) + 1, str(last[0][1])) if last else (1, GENESIS)
    ts = ts or iso(utcnow())
    evidence_json = orjson.dumps(ev.evidence, option=orjson.OPT_SORT_KEYS).decode()
    digest = entry_hash(prev, ts, ev, evidence_json)
    store.execute(
        f"INSERT INTO disrupt_audit ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, ts, ev.actor, ev.action, ev.target, ev.policy_id, ev.policy_version, ev.rule_version,
         ev.model_version, evidence_json, prev, digest),
    )  # fmt: skip
    entry = AuditEntry(seq, ts, ev.actor, ev.action, ev.target, ev.policy_id, ev.policy_version,
                       ev.rule_version, ev.model_version, ev.evidence, prev, digest)  # fmt: skip
    for fn in _listeners:
        fn(entry)
    return entry


def _entry(r: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], orjson.loads(r[9]), r[10], r[11])


def list_entries(store: Store, *, target: str | None = None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    if target is None:
        rows = store.query(f"SELECT {_COLS} FROM disrupt_audit ORDER BY seq LIMIT ? OFFSET ?", (limit, offset))
    else:
        rows = store.query(
            f"SELECT {_COLS} FROM disrupt_audit WHERE target = ? ORDER BY seq LIMIT ? OFFSET ?",
            (target, limit, offset),
        )
    return [_entry(r) for r in rows]


def head(store: Store) -> AuditAnchor | None:
    rows = store.query("SELECT seq, entry_hash FROM disrupt_audit ORDER BY seq DESC LIMIT 1")
    return AuditAnchor(int(rows[0][0]), str(rows[0][1])) if rows else None


def verify(store: Store, anchor: AuditAnchor | None = None) -> AuditVerification:
    """Recompute the chain; report the first changed, removed or reordered entry."""
    rows = store.query(f"SELECT {_COLS} FROM disrupt_audit ORDER BY seq")
    stored = {str(r[11]): i for i, r in enumerate(rows)}
    prev, prev_seq = GENESIS, 0
    tip = AuditAnchor(int(rows[-1][0]), str(rows[-1][11])) if rows else None

    def bad(seq: int, problem: str, message: str) -> AuditVerification:
        return AuditVerification(False, len(rows), tip, seq, problem, message)

    for i, r in enumerate(rows):
        seq = int(r[0])
        ev = AuditEvent(r[2], r[3], r[4], None, r[5], r[6], r[7], r[8])
        if entry_hash(str(r[10]), str(r[1]), ev, str(r[9])) != r[11]:
            return bad(seq, "changed", f"entry {seq} does not match its hash: its content was changed")
        if r[10] != prev:
            where = stored.get(str(r[10]))
            if where is not None and where > i:
                return bad(seq, "reordered", f"entry {seq} follows entry {rows[where][0]} in the chain: moved")
            missing = prev_seq + 1
            return bad(missing, "removed", f"the entry before {seq} (expected seq {missing}) was removed")
        if seq != prev_seq + 1:
            return bad(prev_seq + 1, "removed", f"seq {prev_seq + 1} is missing")
        prev, prev_seq = str(r[11]), seq
    if anchor is not None:
        found = next((r for r in rows if int(r[0]) == anchor.seq), None)
        if found is None:
            return bad(anchor.seq, "truncated", f"anchored entry {anchor.seq} is gone: the log was cut")
        if found[11] != anchor.entry_hash:
            return bad(anchor.seq, "changed", f"entry {anchor.seq} differs from the anchor: chain rewritten")
    n = len(rows)
    return AuditVerification(
        True, n, tip, message=f"{n} entries, chain intact" + (" and matches the anchor" if anchor else "")
    )
