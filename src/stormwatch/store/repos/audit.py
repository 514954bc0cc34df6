"""The append-only, hash-chained audit log (table ``disrupt_audit``), and audited reads of event text.

:meth:`AuditRepo.append` is the one writer of the chain, for every package (disrupt's decisions and
cases, the API's tokens, the TAXII server's writes): entry ``n`` stores ``prev_hash`` (entry
``n-1``'s hash; :data:`GENESIS` for the first) and ``entry_hash = sha256(prev_hash +
canonical_json(entry))`` (:func:`entry_hash`). It appends in the caller's transaction (the entry
commits or rolls back with the change it records). On PostgreSQL it first takes ``LOCK TABLE
disrupt_audit IN EXCLUSIVE MODE`` so two writers cannot both read the same tip and fork the chain;
SQLite serialises writers on its own (one write transaction at a time). The dialect check lives
here and nowhere else.

:meth:`AuditRepo.read_events` is how user-authored text leaves the store: it appends one
``event.text.read`` entry per event and commits *before* returning the text, so no text is read
without its audit record (the API and ``stormwatch accounts show --text`` both use it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stormwatch.store.database import Repository
from stormwatch.store.records import Record

__all__ = [
    "EVENT_TEXT_READ",
    "GENESIS",
    "AuditAnchor",
    "AuditEntry",
    "AuditEvent",
    "AuditRepo",
    "ChainLink",
    "EventDetection",
    "EventText",
    "add_listener",
    "entry_hash",
    "remove_listener",
]

GENESIS = "0" * 64
#: the audit action of reading an event's text
EVENT_TEXT_READ = "event.text.read"
_COLS = (
    "seq, ts, actor, action, target, policy_id, policy_version, rule_version, model_version, "
    "evidence, prev_hash, entry_hash"
)


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


@dataclass(frozen=True)
class AuditEntry(Record):
    """One entry of the chain, ``evidence`` parsed."""

    seq: int
    ts: str
    actor: str
    action: str
    target: str
    policy_id: str | None
    policy_version: str | None
    rule_version: str | None
    model_version: str | None
    evidence: Any
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class AuditAnchor(Record):
    """The chain's tip (``seq``, ``entry_hash``): kept outside the database, it detects a rewritten chain."""

    seq: int
    entry_hash: str


@dataclass(frozen=True)
class ChainLink:
    """One stored entry exactly as hashed (``evidence_json`` is the stored text), for verification."""

    seq: int
    ts: str
    event: AuditEvent
    evidence_json: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class EventDetection(Record):
    model_version: str
    score: float
    flagged: bool
    top_ttp: str | None


@dataclass(frozen=True)
class EventText(Record):
    """An event with its user-authored ``text`` and its detections (what an analyst judges)."""

    event_id: str
    ts: str
    account_id: str
    model: str | None
    conversation_id: str | None
    refused: bool | None
    text: str
    detections: tuple[EventDetection, ...]


_listeners: list[Callable[[AuditEntry], None]] = []


def add_listener(fn: Callable[[AuditEntry], None]) -> None:
    """Also send every appended entry to ``fn`` (syslog, a SIEM, ...), after it is in the chain."""
    _listeners.append(fn)


def remove_listener(fn: Callable[[AuditEntry], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def entry_hash(prev_hash: str, ts: str, ev: AuditEvent, evidence_json: str) -> str:
    """``sha256(prev_hash + canonical JSON)`` of the fields an entry commits to (sorted keys)."""
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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry(r: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(r[0]),
        ts=r[1],
        actor=r[2],
        action=r[3],
        target=r[4],
        policy_id=r[5],
        policy_version=r[6],
        rule_version=r[7],
        model_version=r[8],
        evidence=orjson.loads(r[9]),
        prev_hash=r[10],
        entry_hash=r[11],
    )


class AuditRepo(Repository):
    # -- the chain ---------------------------------------------------------------------------------
    def append(self, ev: AuditEvent, ts: str | None = None) -> AuditEntry:
        """Append ``ev`` to the chain inside the caller's transaction (the caller commits).

        Listeners (:func:`add_listener`) hear of the entry afterwards.
        """
        if self._db.dialect == "postgres":
            self._x("LOCK TABLE disrupt_audit IN EXCLUSIVE MODE")
        last = self._q("SELECT seq, entry_hash FROM disrupt_audit ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(last[0][0]) + 1, str(last[0][1])) if last else (1, GENESIS)
        ts = ts or _now()
        evidence_json = orjson.dumps(ev.evidence, option=orjson.OPT_SORT_KEYS).decode()
        digest = entry_hash(prev, ts, ev, evidence_json)
        self._x(
            f"INSERT INTO disrupt_audit ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, ev.actor, ev.action, ev.target, ev.policy_id, ev.policy_version, ev.rule_version,
             ev.model_version, evidence_json, prev, digest),
        )  # fmt: skip
        entry = AuditEntry(seq, ts, ev.actor, ev.action, ev.target, ev.policy_id, ev.policy_version,
                           ev.rule_version, ev.model_version, ev.evidence, prev, digest)  # fmt: skip
        for fn in list(_listeners):
            fn(entry)
        return entry

    def entries(self, *, target: str | None = None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        """Entries in chain order (of one ``target``, e.g. ``account:a1``)."""
        if target is None:
            rows = self._q(f"SELECT {_COLS} FROM disrupt_audit ORDER BY seq LIMIT ? OFFSET ?", (limit, offset))
        else:
            rows = self._q(
                f"SELECT {_COLS} FROM disrupt_audit WHERE target = ? ORDER BY seq LIMIT ? OFFSET ?",
                (target, limit, offset),
            )
        return [_entry(r) for r in rows]

    def head(self) -> AuditAnchor | None:
        """The last entry's (seq, hash); ``None`` for an empty log."""
        rows = self._q("SELECT seq, entry_hash FROM disrupt_audit ORDER BY seq DESC LIMIT 1")
        return AuditAnchor(int(rows[0][0]), str(rows[0][1])) if rows else None

    def chain(self) -> list[ChainLink]:
        """Every stored entry in ``seq`` order, as hashed (for :func:`stormwatch.disrupt.audit.verify`)."""
        rows = self._q(f"SELECT {_COLS} FROM disrupt_audit ORDER BY seq")
        return [
            ChainLink(
                seq=int(r[0]),
                ts=str(r[1]),
                event=AuditEvent(r[2], r[3], r[4], None, r[5], r[6], r[7], r[8]),
                evidence_json=str(r[9]),
                prev_hash=str(r[10]),
                entry_hash=str(r[11]),
            )
            for r in rows
        ]

    def count(self, *, action: str | None = None) -> int:
        if action is None:
            return int(self._q("SELECT COUNT(*) FROM disrupt_audit")[0][0])
        return int(self._q("SELECT COUNT(*) FROM disrupt_audit WHERE action = ?", (action,))[0][0])

    # -- audited reads of event text -----------------------------------------------------------------
    def top_event_ids(self, account_id: str, *, limit: int, offset: int = 0) -> list[str]:
        """The account's events to read first: highest score under the model that judged the account.

        Events without a detection of that model (or an account never judged) follow, newest first.
        Reads no text and audits nothing.
        """
        rows = self._q("SELECT model_version FROM account_judgements WHERE account_id = ?", (account_id,))
        model = str(rows[0][0]) if rows and rows[0][0] is not None else ""
        got = self._q(
            "SELECT e.event_id FROM events e LEFT JOIN detections d"
            " ON d.event_id = e.event_id AND d.model_version = ? WHERE e.account_id = ?"
            " ORDER BY CASE WHEN d.score IS NULL THEN 1 ELSE 0 END, d.score DESC, e.ts DESC, e.event_id"
            " LIMIT ? OFFSET ?",
            (model, account_id, limit, offset),
        )
        return [str(r[0]) for r in got]

    def account_has_events(self, account_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM events WHERE account_id = ? LIMIT 1", (account_id,)))

    def _detections(self, event_id: str) -> tuple[EventDetection, ...]:
        rows = self._q(
            "SELECT model_version, score, flagged, top_ttp FROM detections WHERE event_id = ? ORDER BY model_version",
            (event_id,),
        )
        return tuple(EventDetection(str(m), float(s), bool(f), t) for m, s, f, t in rows)

    def read_events(self, event_ids: Sequence[str], *, actor: str, via: str) -> list[EventText | None]:
        """Each event with its text (``None`` for an unknown id), each read audited.

        Appends one ``event.text.read`` entry per found event (evidence: the account and ``via``,
        e.g. ``api`` or ``cli``) and commits before returning, so no text leaves without its record.
        On an error nothing is committed and no text is returned.
        """
        try:
            found = [self._db.get_event(event_id) for event_id in event_ids]
            for ev in found:
                if ev is not None:
                    self.append(
                        AuditEvent(
                            actor=actor,
                            action=EVENT_TEXT_READ,
                            target=f"event:{ev.event_id}",
                            evidence={"account_id": ev.account_id, "via": via},
                        )
                    )
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return [
            None
            if ev is None
            else EventText(
                event_id=ev.event_id,
                ts=ev.ts,
                account_id=ev.account_id,
                model=ev.model,
                conversation_id=ev.conversation_id,
                refused=ev.refused,
                text=ev.text(),
                detections=self._detections(ev.event_id),
            )
            for ev in found
        ]
