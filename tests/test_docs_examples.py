"""Every shell example in README.md and docs/*.md is executed, so a documented command cannot silently break.

How a document is run:

* Every fenced block tagged ``sh``, ``bash``, ``shell`` or ``console`` is an example. Blocks of one document run in
  order in one bash session (variables set in one block are seen by the next), in a fresh working directory laid
  out like a checkout (``tests/fixtures/``, ``policies/``) with a small simulated platform in ``sim/``. Synopses
  and other text that is not meant to be run are fenced as ``text``.
* The session starts with a temporary database (``STORMWATCH_DB``) already holding that platform, ingested,
  analysed, with intel imported, and these variables, which the documents name where an id from the reader's own
  data belongs: ``$ACCOUNT`` (a flagged account), ``$CLUSTER`` (a flagged cluster), ``$EVENT`` (one of
  ``$ACCOUNT``'s events).
* Each command (continuation lines joined) must exit 0, or the code its trailing comment names as ``(exit N)``.
  A failure names the document and line.
* A command ending in ``&`` runs in the background; when it is ``stormwatch serve`` or names a ``--port``, the
  session then waits until that port answers. Background jobs are ended with the session.
* ``<!-- docs-test: skip REASON -->`` on the line before a fence skips that block; only the blocks listed in
  ``ALLOWED_SKIPS`` may use it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_TAGS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```(?P<tag>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s+(?P<why>.+?)\s*-->\s*$")
EXIT = re.compile(r"#.*\(exit (?P<code>\d+)\)")
# (document, first line of the block's code): why it is not run here.
ALLOWED_SKIPS = {
    ("README.md", "make demo"): "the Quickstart itself: .ci/run runs `make demo` and `make test` on a clean clone",
    ("sharing.md", ".venv/bin/python benchmarks/bench_taxii.py"): "a 4-minute benchmark against a medallion venv",
}
SERVE_PORT = re.compile(r"--port[ =](\d+)")


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    expect: int


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    tag: str
    skip: str | None
    commands: tuple[Command, ...]


def _commands(doc: str, first_line: int, body: str) -> tuple[Command, ...]:
    out: list[Command] = []
    pending: list[str] = []
    start = first_line
    for offset, raw in enumerate(body.splitlines()):
        if not pending:
            start = first_line + offset
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip())
            continue
        pending.append(raw)
        text = "\n".join(pending)
        pending = []
        m = EXIT.search(text)
        out.append(Command(doc, start, text, int(m.group("code")) if m else 0))
    if pending:
        raise AssertionError(f"{doc}:{start}: a continuation line ends the block")
    return tuple(out)


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    for m in FENCE.finditer(text):
        tag = m.group("tag").lower()
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        cmds = _commands(path.name, line + 1, m.group("body")) if tag in SHELL_TAGS else ()
        found.append(Block(path.name, line, tag, skip.group("why") if skip else None, cmds))
    return found


def script(doc_blocks: list[Block]) -> str:
    """One bash script for a document: each command checked for its exit code, failures named by doc:line."""
    lines = [
        "set -u",
        "set -o pipefail",
        "trap 'jobs -p | xargs -r kill 2>/dev/null; wait 2>/dev/null' EXIT",
        '__check() { if [ "$1" != "$2" ]; then echo "DOCS-TEST FAILED $3: exit $1, expected $2" >&2; exit 1; fi; }',
        '__wait_port() { for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0;'
        ' sleep 0.1; done; echo "DOCS-TEST FAILED $2: nothing answers on port $1" >&2; exit 1; }',
    ]
    for block in doc_blocks:
        if block.skip is not None or not block.commands:
            continue
        for cmd in block.commands:
            where = f"{cmd.doc}:{cmd.line}"
            lines.append(f"echo {shlex.quote('$ ' + cmd.text.splitlines()[0])} >&2")
            body = cmd.text.rstrip()
            if re.search(r"(?<![&|])&\s*(#.*)?$", body):
                lines.append(body)
                m = SERVE_PORT.search(body)
                if m or "stormwatch serve" in body:
                    lines.append(f"__wait_port {m.group(1) if m else '8000'} {shlex.quote(where)}")
                continue
            lines.append(body)
            lines.append(f"__check $? {cmd.expect} {shlex.quote(where)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A small simulated platform, ingested, with intel imported and analysed: the state the docs start from."""
    base = tmp_path_factory.mktemp("docs-platform")
    env = _env(base / "stormwatch.db")

    def sw(*args: str) -> str:
        res = subprocess.run(
            [str(VENV_BIN / "stormwatch"), *args], cwd=base, env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode in (0, 10), f"stormwatch {' '.join(args)}: {res.returncode}\n{res.stderr[-3000:]}"
        return res.stdout

    sw("simulate", "--out", "sim", "--seed", "7", "--accounts", "400", "--days", "14", "--quiet")
    sw("ingest", "sim/events.jsonl", "--accounts", "sim/accounts.jsonl", "--quiet")
    sw("intel", "import", "sim/intel.stix.json")
    sw("analyze", "--quiet")
    sw("accounts", "export", "-o", "accounts.jsonl")
    judged = [json.loads(line) for line in (base / "accounts.jsonl").read_text(encoding="utf-8").splitlines()]
    flagged = sorted((a for a in judged if a["flagged"]), key=lambda a: (-a["risk"], a["account_id"]))
    assert flagged, "the docs platform has no flagged account"
    account = flagged[0]["account_id"]
    event = next(e for ev in flagged[0]["evidence"] for e in ev.get("event_ids", []))
    listed = json.loads(sw("clusters", "list", "--json"))
    clusters = listed["items"] if isinstance(listed, dict) else listed
    assert clusters, "the docs platform has no cluster"
    return {"dir": base, "ACCOUNT": account, "EVENT": event, "CLUSTER": clusters[0]["cluster_id"]}


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMWATCH_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["STORMWATCH_DB"] = f"sqlite:///{db}"
    env["NO_COLOR"] = "1"
    return env


def test_every_document_block_is_parsed() -> None:
    """Shell blocks parse, skips are only the allowed ones, and no shell block is empty."""
    skips: dict[tuple[str, str], str] = {}
    for path in DOCS:
        for block in blocks(path):
            if block.tag in SHELL_TAGS:
                assert block.commands, f"{block.doc}:{block.line}: an empty shell block"
            if block.skip is not None:
                key = (block.doc, " ".join(block.commands[0].text.split()[:2]) if block.commands else "")
                skips[key] = block.skip
    assert set(skips) == set(ALLOWED_SKIPS), f"skipped blocks changed: {sorted(skips)}"


def test_harness_reports_a_failing_command(tmp_path: Path) -> None:
    """The harness itself can fail: a broken example is reported with its document and line."""
    doc = tmp_path / "broken.md"
    doc.write_text("intro\n\n```sh\necho ok\nstormwatch no-such-command\n```\n", encoding="utf-8")
    res = subprocess.run(
        ["bash", "-c", script(blocks(doc))], env=_env(tmp_path / "x.db"), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1
    assert "DOCS-TEST FAILED broken.md:5: exit 2, expected 0" in res.stderr


def _runnable(doc: Path) -> bool:
    return any(b.commands and b.skip is None for b in blocks(doc))


#: reference pages with nothing to run (field tables, the model card, the layout, synopses in ``text`` fences)
WITHOUT_EXAMPLES = {
    "architecture.md",
    "detectors-extra.md",
    "formats.md",
    "model-card.md",
    "model-card-cascade.md",
}


def test_only_the_reference_pages_have_no_example() -> None:
    """A document that loses its last runnable example (or a new page without one) is noticed here."""
    assert {d.name for d in DOCS if not _runnable(d)} == WITHOUT_EXAMPLES


#: pages whose examples are slow (a JVM, live servers): run by test_docs_examples_slow.py, a module of
#: its own so that `make test` (xdist, --dist loadfile) runs them beside the others, not after them
SLOW_PAGES = {"scale.md", "watch.md", "online.md", "console.md", "report.md"}


@pytest.mark.parametrize("doc", [d for d in DOCS if _runnable(d) and d.name not in SLOW_PAGES], ids=lambda p: p.name)
def test_document_examples_run(doc: Path, platform: dict[str, Path | str], tmp_path: Path) -> None:
    doc_blocks = blocks(doc)
    work = tmp_path / "work"
    shutil.copytree(ROOT / "tests" / "fixtures", work / "tests" / "fixtures")
    shutil.copytree(ROOT / "policies", work / "policies")
    base = Path(platform["dir"])
    shutil.copytree(base / "sim", work / "sim")
    shutil.copy(base / "stormwatch.db", work / "stormwatch.db")
    env = _env(work / "stormwatch.db")
    for key in ("ACCOUNT", "CLUSTER", "EVENT"):
        env[key] = str(platform[key])
    res = subprocess.run(
        ["bash", "-c", script(doc_blocks)], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, f"{doc.name} examples failed:\n{res.stderr[-6000:]}\n{res.stdout[-2000:]}"
