"""Ingest hardening: the Batch join from the CLI, bounded line reading, pipes, quarantine-once, a private SQLite file.

Every check drives the real command line (in-process through ``main`` or as a subprocess with a timeout and a
memory limit) against real files, FIFOs and pipes, and looks at what the database holds afterwards.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.errors import EXIT_INPUT, EXIT_OK, EXIT_QUARANTINED
from stormwatch.ingest.formats.base import FormatOptions, OverlongLine, iter_lines
from stormwatch.store import open_store
from stormwatch.store import sql as store_sql
from stormwatch.store.migrations import MIGRATIONS

FIXTURES = Path(__file__).parent / "fixtures"
WIRE = FIXTURES / "wire"
BAD = FIXTURES / "malformed"
MIB = 1024 * 1024
#: what a run of the CLI may take here before it counts as hung
RUN_TIMEOUT = 120


def good(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "ts": "2026-03-01T10:00:00Z",
            "account_id": "acct_1",
            "messages": [{"role": "user", "content": f"question {i}"}],
        }
    ).encode()


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, object]]:
    code = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (int(1.5 * 1024 * MIB), int(1.5 * 1024 * MIB)))


def run_cli(
    args: list[str], *, stdin: bytes | None = None, cwd: Path | None = None, limit_memory: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """``stormwatch ARGS`` in its own process, bounded in time (and in address space when asked)."""
    return subprocess.run(
        [sys.executable, "-m", "stormwatch", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        cwd=cwd,
        preexec_fn=_limit_memory if limit_memory else None,
        check=False,
    )


def summary_of(proc: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, proc.stderr.decode()
    result: dict[str, object] = json.loads(lines[-1])
    return result


def event_ids(db: str) -> set[str]:
    with open_store(db) as s:
        return {str(r[0]) for r in s._query("SELECT event_id FROM events")}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# 1. OpenAI Batch: input and output files are joined when given to the CLI


def test_readme_batch_command_joins_input_and_output(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(WIRE / "batch_input.jsonl"), str(WIRE / "batch_output.jsonl")]
    # the README's command: 6 lines, 3 input/output pairs, one of them expired (no time of its own)
    argv = ["--db", sqlite_url, "ingest", *files, "--format", "openai_batch", "--account", "acct_x"]
    code, summary = run_json(capsys, [*argv, "--batch-ts", "2026-11-25T18:00:00Z", "--json"])
    assert code == EXIT_OK
    assert (summary["read"], summary["stored"], summary["quarantined"]) == (3, 3, 0)
    assert event_ids(sqlite_url) == {"req_a1b2c3", "req_d4e5f6", "batch_req_03"}
    with open_store(sqlite_url) as s:
        assert s.list_quarantine() == []


def test_batch_without_batch_ts_says_which_flag_to_pass(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(WIRE / "batch_output.jsonl"), str(WIRE / "batch_input.jsonl")]  # any order, sniffed
    code, summary = run_json(capsys, ["--db", sqlite_url, "ingest", *files, "--account", "acct_x", "--json"])
    assert code == EXIT_QUARANTINED
    assert (summary["stored"], summary["quarantined"]) == (2, 1)
    assert set(summary["formats"].values()) == {"openai_batch"}  # type: ignore[attr-defined]
    with open_store(sqlite_url) as s:
        [row] = s.list_quarantine()
    assert row.source == str((WIRE / "batch_input.jsonl").resolve()) and row.line == 3 and row.field == "ts"
    assert "--batch-ts" in row.reason and "batch_output.jsonl:3" in row.reason


def test_batch_output_alone_says_the_input_file_is_missing(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary = run_json(
        capsys, ["--db", sqlite_url, "ingest", str(WIRE / "batch_output.jsonl"), "--account", "a", "--json"]
    )
    assert code == EXIT_QUARANTINED and summary["quarantined"] == 3
    with open_store(sqlite_url) as s:
        rows = s.list_quarantine()
    assert all("no Batch input file was given in this run" in r.reason for r in rows)


def test_batch_ts_that_is_not_a_time_is_a_usage_error(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--db", sqlite_url, "ingest", str(WIRE / "batch_input.jsonl"), "--batch-ts", "yesterday"])
    assert code == EXIT_INPUT
    assert "--batch-ts" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 2. bounded line reading


def test_dev_zero_stops_with_a_bounded_memory(tmp_path: Path) -> None:
    """/dev/zero never ends a line: the file is stopped as not line-delimited, in little memory and time."""
    db = f"sqlite:///{tmp_path / 'z.db'}"
    proc = run_cli(["--db", db, "ingest", "/dev/zero", "--format", "canonical", "--json"], limit_memory=True)
    assert proc.returncode == EXIT_QUARANTINED, proc.stderr.decode()[-2000:]
    assert summary_of(proc)["quarantined"] == 1
    with open_store(db) as s:
        [row] = s.list_quarantine()
    assert (row.source, row.line) == ("/dev/zero", 1)
    assert "not line-delimited" in row.reason


@pytest.mark.parametrize("workers", ["1", "2"])
def test_overlong_line_is_quarantined_and_reading_goes_on(tmp_path: Path, workers: str) -> None:
    """A 40 MiB line (over --max-record-bytes) is quarantined at its line; the lines after it are stored."""
    path = tmp_path / "long.jsonl.gz"
    big = b'{"event_id": "big", "prompt": "' + b"x" * (40 * MIB) + b'"}'
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(good(1) + b"\n")
        fh.write(big + b"\r\n")
        fh.write(good(3) + b"\n" + good(4) + b"\n")
    db = f"sqlite:///{tmp_path / 'l.db'}"
    args = ["--db", db, "ingest", str(path), "--max-record-bytes", str(MIB), "--workers", workers, "--json"]
    proc = run_cli(args, limit_memory=True)
    assert proc.returncode == EXIT_QUARANTINED, proc.stderr.decode()[-2000:]
    assert event_ids(db) == {"e1", "e3", "e4"}
    with open_store(db) as s:
        [row] = s.list_quarantine()
    assert row.line == 2 and f"record is {len(big)} bytes, over the limit of {MIB}" in row.reason
    assert len(row.raw) == MIB and row.raw.startswith(b'{"event_id": "big"')


def test_gzip_of_endless_zeros_stops_after_the_good_lines(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.gz"
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as fh:
        fh.write(deflate.compress(good(1) + b"\n"))
        block = b"\0" * (4 * MIB)
        for _ in range(80):  # 320 MiB of NUL once decompressed, about 300 KiB on disk
            fh.write(deflate.compress(block))
        fh.write(deflate.flush())
    db = f"sqlite:///{tmp_path / 'b.db'}"
    proc = run_cli(["--db", db, "ingest", str(path), "--json"], limit_memory=True)
    assert proc.returncode == EXIT_QUARANTINED, proc.stderr.decode()[-2000:]
    assert event_ids(db) == {"e1"}
    with open_store(db) as s:
        [row] = s.list_quarantine()
    assert row.line == 2 and "not line-delimited" in row.reason


def test_line_reader_bounds(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    # a line of exactly the limit with CRLF is an ordinary line; one byte more is over-long; numbering goes on
    path.write_bytes(b"a" * 100 + b"\r\n" + b"b" * 101 + b"\n" + b"c" * 100 + b"\n\n" + b"d" * 250)
    got = list(iter_lines(path, FormatOptions(max_record_bytes=100)))
    assert [(n, len(raw), type(raw)) for n, raw in got] == [
        (1, 100, bytes),
        (2, 100, OverlongLine),
        (3, 100, bytes),
        (5, 100, OverlongLine),
    ]
    assert isinstance(got[1][1], OverlongLine) and got[1][1].size == 101
    assert isinstance(got[3][1], OverlongLine) and got[3][1].size == 250


# --------------------------------------------------------------------------------------------
# 2b. pipes: sniffing reads a head that the parser then reuses


@pytest.fixture
def fifo_writer(tmp_path: Path) -> Iterator[list[tuple[Path, threading.Thread]]]:
    writers: list[tuple[Path, threading.Thread]] = []
    yield writers
    for path, thread in writers:  # a writer still blocked in open() is released by opening the read side
        if thread.is_alive():
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            thread.join(5)
            os.close(fd)


def write_fifo(writers: list[tuple[Path, threading.Thread]], path: Path, data: bytes) -> None:
    os.mkfifo(path)

    def feed() -> None:
        try:
            with open(path, "wb") as fh:
                for i in range(0, len(data), 8192):
                    fh.write(data[i : i + 8192])
        except OSError:
            pass  # the reader went away: the test fails on its own assertions

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    writers.append((path, thread))


def test_fifo_is_sniffed_and_read_whole(tmp_path: Path, fifo_writer: list[tuple[Path, threading.Thread]]) -> None:
    n = 3000  # more than the 64 KiB head, so the parser must go on where sniffing stopped
    data = b"".join(good(i) + b"\n" for i in range(n))
    assert len(data) > 3 * 64 * 1024
    fifo = tmp_path / "events.fifo"
    write_fifo(fifo_writer, fifo, data)
    db = f"sqlite:///{tmp_path / 'f.db'}"
    proc = run_cli(["--db", db, "ingest", str(fifo), "--json"])
    assert proc.returncode == EXIT_OK, proc.stderr.decode()[-2000:]
    assert summary_of(proc)["stored"] == n
    assert event_ids(db) == {f"e{i}" for i in range(n)}


@pytest.mark.parametrize("compressed", [False, True])
def test_stdin_is_sniffed_and_read_whole(tmp_path: Path, compressed: bool) -> None:
    n = 2500
    data = b"".join(good(i) + b"\n" for i in range(n))
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc = run_cli(["--db", db, "ingest", "/dev/stdin", "--json"], stdin=gzip.compress(data) if compressed else data)
    assert proc.returncode == EXIT_OK, proc.stderr.decode()[-2000:]
    assert summary_of(proc)["stored"] == n


def test_batch_pair_through_fifos_is_sniffed_and_joined(
    tmp_path: Path, fifo_writer: list[tuple[Path, threading.Thread]]
) -> None:
    inp, out = tmp_path / "in.fifo", tmp_path / "out.fifo"
    write_fifo(fifo_writer, inp, (WIRE / "batch_input.jsonl").read_bytes())
    write_fifo(fifo_writer, out, (WIRE / "batch_output.jsonl").read_bytes())
    db = f"sqlite:///{tmp_path / 'p.db'}"
    proc = run_cli(["--db", db, "ingest", str(inp), str(out), "--account", "a", "--batch-ts", "1795629000", "--json"])
    assert proc.returncode == EXIT_OK, proc.stderr.decode()[-2000:]
    assert event_ids(db) == {"req_a1b2c3", "req_d4e5f6", "batch_req_03"}


# --------------------------------------------------------------------------------------------
# 3. a file-level failure is quarantined once, under one name


def test_damaged_gzip_is_quarantined_once_by_any_name(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(BAD / "canonical_truncated.jsonl.gz", tmp_path / "cut.jsonl.gz")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    (tmp_path / "link.jsonl.gz").symlink_to(tmp_path / "cut.jsonl.gz")
    for name in ("../cut.jsonl.gz", str(tmp_path / "cut.jsonl.gz"), "../link.jsonl.gz", "../cut.jsonl.gz"):
        code, summary = run_json(capsys, ["--db", db_url, "ingest", name, "--json"])
        assert code == EXIT_QUARANTINED and summary["quarantined"] == 1
    with open_store(db_url) as s:
        rows = s.list_quarantine()
        assert s.count_events() == 185
    assert [(r.source, r.line) for r in rows] == [(str(tmp_path / "cut.jsonl.gz"), 186)]
    assert "damaged or truncated" in rows[0].reason


def test_file_level_rows_without_a_line_are_kept_once(db_url: str) -> None:
    from stormwatch.ingest.formats.base import Rejected

    with open_store(db_url) as s:
        for _ in range(3):
            s.add_quarantine([Rejected("/data/x.jsonl", None, "cannot open: Permission denied")], "run_1")
        assert s.count_quarantine(None) == 1


def test_migration_0008_removes_repeated_file_level_rows(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from stormwatch.ingest.formats.base import Rejected

    monkeypatch.setattr(store_sql, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version < 8))
    s = open_store(db_url)  # the schema as it was before 0008
    try:
        for run in ("r1", "r2", "r3"):
            s.add_quarantine(
                [Rejected("/data/x.gz", None, "damaged"), Rejected("/data/x.gz", 4, "bad", None, b"{")], run
            )
        assert s.count_quarantine(None) == 4  # the file-level row three times, the line once
        monkeypatch.setattr(store_sql, "MIGRATIONS", MIGRATIONS)
        assert 8 in s.migrate()
        rows = s.list_quarantine()
        assert [(r.run_id, r.line) for r in rows] == [("r1", None), ("r1", 4)]
        s.add_quarantine([Rejected("/data/x.gz", None, "damaged")], "r4")
        assert s.count_quarantine(None) == 2
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# 4. the SQLite file is private


def test_new_sqlite_database_is_private(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    old = os.umask(0o022)
    try:
        assert main(["--db", f"sqlite:///{db}", "ingest", str(WIRE / "batch_input.jsonl"), "-q"]) == EXIT_QUARANTINED
    finally:
        os.umask(old)
    files = [db, *(p for p in (tmp_path / "fresh.db-wal", tmp_path / "fresh.db-shm") if p.exists())]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_existing_sqlite_database_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)
    assert main(["--db", f"sqlite:///{db}", "db", "migrate"]) == EXIT_OK
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


# --------------------------------------------------------------------------------------------
# the malformed corpus, as docs/formats.md describes it


def test_truncated_gzip_fixture_is_sniffed_and_keeps_its_good_lines(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run_json(
        capsys, ["--db", sqlite_url, "ingest", str(BAD / "canonical_truncated.jsonl.gz"), "--json"]
    )
    assert code == EXIT_QUARANTINED
    assert (summary["stored"], summary["quarantined"]) == (185, 1)
