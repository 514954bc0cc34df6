"""`stormwatch ingest` and `stormwatch quarantine` end to end, through main(argv)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.errors import EXIT_INPUT, EXIT_OK, EXIT_QUARANTINED
from stormwatch.store import open_store


def write_lines(path: Path, lines: list[bytes | str | dict[str, object]]) -> Path:
    with open(path, "wb") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            fh.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def good(i: int) -> dict[str, object]:
    return {
        "event_id": f"e{i}",
        "ts": "2026-03-01T10:00:00Z",
        "account_id": "acct_1",
        "messages": [{"role": "user", "content": f"question {i}"}],
    }


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, object]]:
    code = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def test_ingest_counts_and_reruns_add_nothing(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = write_lines(tmp_path / "events.jsonl", [good(i) for i in range(50)])
    code, summary = run_json(capsys, ["--db", db_url, "ingest", str(f), "--json"])
    assert code == EXIT_OK
    assert {k: summary[k] for k in ("read", "stored", "duplicates", "quarantined")} == {
        "read": 50,
        "stored": 50,
        "duplicates": 0,
        "quarantined": 0,
    }
    code, summary = run_json(capsys, ["--db", db_url, "ingest", str(f), "--json"])
    assert code == EXIT_OK
    assert (summary["stored"], summary["duplicates"]) == (0, 50)
    s = open_store(db_url)
    assert s.count_events() == 50
    s.close()


def test_bad_records_are_quarantined_with_location(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write_lines(
        tmp_path / "mixed.jsonl",
        [
            good(1),
            '{"event_id": "e2", "ts": "2026-03-01T10:00:00Z", "account_id": "a", "messa',  # truncated
            {**good(3), "ts": ["2026"]},  # wrong type
            {"event_id": "e4", "ts": "2026-03-01T10:00:00Z", "messages": []},  # missing account_id
            # bad UTF-8
            b'{"event_id": "e5", "ts": "2026-03-01T10:00:00Z", "account_id": "a", "prompt": "\xff\xfe"}',
            {**good(6), "refused": "yes"},
            "",
            good(7),
            good(1),  # duplicate id
        ],
    )
    code, summary = run_json(capsys, ["--db", sqlite_url, "ingest", str(f), "--json"])
    assert code == EXIT_QUARANTINED
    assert (summary["read"], summary["stored"], summary["duplicates"], summary["quarantined"]) == (8, 2, 1, 5)
    assert main(["--db", sqlite_url, "quarantine", "list", "--json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    rows = listed["items"]
    assert listed["total"] == 5
    got = [(r["line"], r["field"]) for r in rows]
    assert got == [(2, None), (3, "ts"), (4, "account_id"), (5, None), (6, "refused")]
    assert all(r["source"] == str(f) for r in rows)
    assert "UTF-8" in rows[3]["reason"]
    assert main(["--db", sqlite_url, "quarantine", "list"]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"{f}:3 [ts]" in text


def test_gzip_input_and_a_truncated_gzip_stream(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = b"".join(json.dumps(good(i)).encode() + b"\n" for i in range(2000))
    whole = tmp_path / "ok.jsonl.gz"
    whole.write_bytes(gzip.compress(payload))
    cut = tmp_path / "cut.jsonl.gz"
    other = b"".join(json.dumps(good(i + 10_000)).encode() + b"\n" for i in range(2000))
    cut.write_bytes(gzip.compress(other)[:-600])
    code, summary = run_json(capsys, ["--db", sqlite_url, "ingest", str(whole), str(cut), "--json"])
    assert code == EXIT_QUARANTINED  # the damaged stream is reported, the run finishes
    assert summary["stored"] >= 2000
    assert summary["quarantined"] == 1
    s = open_store(sqlite_url)
    [row] = s.list_quarantine()
    s.close()
    assert row.source == str(cut) and "damaged or truncated" in row.reason


def test_huge_record_is_quarantined_with_its_first_bytes(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write_lines(tmp_path / "big.jsonl", [{**good(1), "prompt": "x" * 5000}, good(2)])
    code, summary = run_json(capsys, ["--db", sqlite_url, "ingest", str(f), "--max-record-bytes", "1000", "--json"])
    assert code == EXIT_QUARANTINED
    assert (summary["stored"], summary["quarantined"]) == (1, 1)
    s = open_store(sqlite_url)
    [row] = s.list_quarantine()
    s.close()
    assert len(row.raw) == 1000 and "over the limit" in row.reason  # its first --max-record-bytes bytes are kept
    assert f"{f.resolve()}" == row.source and row.line == 1


def test_accounts_file(tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    acc = write_lines(
        tmp_path / "accounts.jsonl",
        [
            {
                "account_id": "acct_1",
                "email_domain": "example.org",
                "country": "DE",
                "created_at": "2026-01-01T00:00:00Z",
            },
            {"account_id": "acct_2", "country": "Germany"},
            {"account_id": "acct_3", "status": "banned"},
        ],
    )
    ev = write_lines(tmp_path / "events.jsonl", [good(1)])
    code, summary = run_json(capsys, ["--db", sqlite_url, "ingest", str(ev), "--accounts", str(acc), "--json"])
    assert code == EXIT_QUARANTINED
    assert (summary["accounts_read"], summary["accounts_stored"], summary["accounts_quarantined"]) == (
        3,
        1,
        2,
    )
    s = open_store(sqlite_url)
    fields = sorted((r.line, r.field, r.kind) for r in s.list_quarantine())
    s.close()
    assert fields == [(2, "country", "account"), (3, "status", "account")]


def test_file_level_errors_say_what_to_do(tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", sqlite_url, "ingest", str(tmp_path / "nope.jsonl")]) == EXIT_INPUT
    assert "no such file" in capsys.readouterr().err
    odd = tmp_path / "odd.txt"
    odd.write_text("hello world\n")
    assert main(["--db", sqlite_url, "ingest", str(odd)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "could not recognise the format" in err and "--format" in err
    assert main(["--db", sqlite_url, "ingest", str(odd), "--format", "bogus"]) == EXIT_INPUT
    assert "unknown format" in capsys.readouterr().err


def test_db_info_and_migrate(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", sqlite_url, "db", "migrate"]) == EXIT_OK
    assert main(["--db", sqlite_url, "db", "info", "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["events"] == 0 and info["schema_version"] >= 1


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for name in ("simulate", "ingest", "quarantine", "classify", "demo"):
        assert name in out


def test_parallel_and_serial_ingest_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Canonical JSONL parsed in worker processes stores and quarantines exactly what one process does."""
    lines: list[bytes | str | dict[str, object]] = []
    for i in range(3000):
        if i % 97 == 5:
            lines.append('{"event_id": "broken"')
        elif i % 89 == 7:
            lines.append({**good(i), "ts": 5})  # an epoch number is accepted
        elif i % 83 == 3:
            lines.append({**good(i), "refused": "no"})
        else:
            lines.append(good(i % 2500))  # some duplicates
    f = write_lines(tmp_path / "mixed.jsonl", lines)
    results = []
    for workers in ("1", "2"):
        url = f"sqlite:///{tmp_path / f'w{workers}.db'}"
        code, summary = run_json(
            capsys, ["--db", url, "ingest", str(f), "--json", "--workers", workers, "--batch-size", "2000"]
        )
        s = open_store(url)
        events = [(e.event_id, e.ts) for _, e in s.iter_events()]
        quarantined = [(r.line, r.field, r.reason) for r in s.list_quarantine(limit=1000)]
        s.close()
        results.append(
            (code, {k: summary[k] for k in ("read", "stored", "duplicates", "quarantined")}, events, quarantined)
        )
    assert results[0] == results[1]
    code, counts, events, quarantined = results[0]
    assert code == EXIT_QUARANTINED and counts["read"] == 3000
    assert counts["stored"] + counts["duplicates"] + counts["quarantined"] == 3000
    assert len(quarantined) == counts["quarantined"] > 0
