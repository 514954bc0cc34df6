"""The hash-chained audit log: every changed, removed or reordered entry is detected, by seq."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.disrupt.audit import AuditEvent, track_event
from stormwatch.store import Store, open_store


def fill(store: Store, n: int = 6) -> None:
    for i in range(1, n + 1):
        track_event(store, AuditEvent(f"analyst:a{i}", "case.annotated", f"case:c{i}", {"i": i, "x": [1.5, None]},
                                      policy_id="p", policy_version="1", rule_version="sha256:ab"))  # fmt: skip
        store.commit()


def test_intact_chain(store: Store) -> None:
    fill(store)
    v = service.verify_audit(store)
    assert v.ok and v.entries == 6 and v.head is not None and v.head.seq == 6
    entries = service.list_audit(store)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    assert entries[2].evidence == {"i": 3, "x": [1.5, None]}


def test_empty_chain_is_ok(store: Store) -> None:
    assert service.verify_audit(store).ok
    assert service.audit_head(store).seq == 0


@pytest.mark.parametrize(
    "sql",
    [
        'UPDATE disrupt_audit SET evidence = \'{"i":99,"x":[1.5,null]}\' WHERE seq = 3',
        "UPDATE disrupt_audit SET actor = 'analyst:mallory' WHERE seq = 3",
        "UPDATE disrupt_audit SET ts = '2020-01-01T00:00:00.000000Z' WHERE seq = 3",
        "UPDATE disrupt_audit SET rule_version = 'sha256:ff' WHERE seq = 3",
    ],
)
def test_changed_entry_detected(store: Store, sql: str) -> None:
    fill(store)
    store.execute(sql)
    store.commit()
    v = service.verify_audit(store)
    assert not v.ok and v.first_bad_seq == 3 and v.problem == "changed"


def test_removed_entry_detected(store: Store) -> None:
    fill(store)
    store.execute("DELETE FROM disrupt_audit WHERE seq = 4")
    store.commit()
    v = service.verify_audit(store)
    assert (v.ok, v.first_bad_seq, v.problem) == (False, 4, "removed")


def test_removed_and_renumbered_detected(store: Store) -> None:
    fill(store)
    store.execute("DELETE FROM disrupt_audit WHERE seq = 2")
    for seq in range(3, 7):
        store.execute("UPDATE disrupt_audit SET seq = ? WHERE seq = ?", (seq - 1, seq))
    store.commit()
    v = service.verify_audit(store)
    assert (v.ok, v.first_bad_seq, v.problem) == (False, 2, "removed")


def test_first_entry_removed(store: Store) -> None:
    fill(store)
    store.execute("DELETE FROM disrupt_audit WHERE seq = 1")
    store.commit()
    v = service.verify_audit(store)
    assert (v.first_bad_seq, v.problem) == (1, "removed")


def test_swapped_entries_detected(store: Store) -> None:
    fill(store)
    store.execute("UPDATE disrupt_audit SET seq = -1 WHERE seq = 3")
    store.execute("UPDATE disrupt_audit SET seq = 3 WHERE seq = 4")
    store.execute("UPDATE disrupt_audit SET seq = 4 WHERE seq = -1")
    store.commit()
    v = service.verify_audit(store)
    assert (v.ok, v.first_bad_seq, v.problem) == (False, 3, "reordered")


def test_truncation_and_rewrite_need_the_anchor(store: Store) -> None:
    fill(store)
    anchor = service.audit_head(store)
    assert service.verify_audit(store, anchor=anchor).ok
    store.execute("DELETE FROM disrupt_audit WHERE seq = 6")
    store.commit()
    assert service.verify_audit(store).ok  # a cut tail leaves a valid chain ...
    v = service.verify_audit(store, anchor=anchor)  # ... that the anchor exposes
    assert (v.ok, v.first_bad_seq, v.problem) == (False, 6, "truncated")


def test_audit_cli(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = open_store(sqlite_url)
    fill(s)
    s.close()
    anchor = tmp_path / "head.json"
    assert main(["--db", sqlite_url, "audit", "anchor", "-o", str(anchor)]) == 0
    assert main(["--db", sqlite_url, "audit", "verify", "--anchor", str(anchor)]) == 0
    assert "chain intact and matches the anchor" in capsys.readouterr().out
    assert main(["--db", sqlite_url, "audit", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert listed.count('"entry_hash"') == 6 and len(orjson.loads(listed)["items"]) == 6
    s = open_store(sqlite_url)
    s.execute("UPDATE disrupt_audit SET target = 'case:other' WHERE seq = 5")
    s.commit()
    s.close()
    assert main(["--db", sqlite_url, "audit", "verify"]) == 1
    assert "BROKEN at seq 5 (changed)" in capsys.readouterr().err
    assert main(["--db", sqlite_url, "audit", "verify", "--json"]) == 1
    assert '"first_bad_seq":5' in capsys.readouterr().out
