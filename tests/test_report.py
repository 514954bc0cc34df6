"""Transparency reports (``stormwatch report``): every format on a generated platform, privacy, k-suppression.

* one small simulated platform, run through ``stormwatch demo`` (simulate, ingest, score, intel,
  analyze, dry-run policies, STIX export, and the HTML report it ends with);
* HTML parsed by html5lib in strict mode, PDF rendered to PNG pages (pypdfium2) with every section
  heading found in its text, Markdown and JSON checked for the same sections;
* a privacy scan of every format for each account id, IP address, e-mail, device, key and prompt
  of the generated platform;
* k-suppression: a hypothesis property test on random tables (no shown count of 1..k-1 accounts,
  no suppressed cell pinned by the totals shown, checked by an independent linear-programming
  attacker), and the same checks on every table of the generated report.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from stormwatch.cli import main
from stormwatch.report.build import build_report
from stormwatch.report.period import covering, parse_period
from stormwatch.report.render import render, to_html, to_markdown
from stormwatch.report.suppress import WITHHELD, count, suppress
from stormwatch.store import open_store

REPO = Path(__file__).resolve().parents[1]
K = 10
SECTIONS = (
    "1. Scope",
    "2. Executive summary",
    "3. Aggregate metrics",
    "4. Cross-cutting analysis",
    "5. What flagged usage is about",
    "6. Case studies",
    "7. Collaboration and sharing",
    "8. Safeguard changes",
    "9. Methodology and limitations",
    "10. Authors and changelog",
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report") / "demo"
    args = ["demo", "--out", str(out), "--seed", "11", "--accounts", "500", "--days", "14", "-q"]
    assert main([*args, "--policies", str(REPO / "policies")]) == 0
    store = open_store(f"sqlite:///{out / 'stormwatch.db'}")
    try:
        truth = json.loads((out / "platform" / "truth.json").read_text(encoding="utf-8"))
        period = covering(truth["time_range"]["start"], truth["time_range"]["end"])
        doc = build_report(store, period, k=K)
        small = build_report(store, period, k=3)
    finally:
        store.close()
    return {
        "dir": out,
        "doc": doc,
        "small": small,
        "outputs": {f: render(doc, f) for f in ("json", "md", "html", "pdf")},
    }


def _tables(doc: Any) -> list[dict[str, Any]]:
    """Every table of a report document (a dict with ``cells``), wherever it sits."""
    found: list[dict[str, Any]] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if "cells" in x:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return found


# -- formats ------------------------------------------------------------------------------------------------------


def test_demo_ends_with_the_html_report(platform: dict[str, Any]) -> None:
    html = (platform["dir"] / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert all(s in html for s in SECTIONS)


def test_json_document(platform: dict[str, Any]) -> None:
    doc = json.loads(platform["outputs"]["json"])
    assert doc["schema"] == "stormwatch.transparency-report/1"
    assert doc["k"] == K
    assert doc["case_studies"], "the platform's operations give case studies"
    for case in doc["case_studies"]:
        assert case["narrative"] and case["ttps"] and case["detected"]
        for row in case["ttps"]:
            assert re.fullmatch(r"LLMT-\d\d", row["llmt"]) and row["attack"]
            assert all(a.startswith("AML.") for a in row["atlas"])
    assert doc["topics"], "flagged usage is described"
    assert len(_tables(doc)) >= 10


def test_html_is_valid_and_has_the_charts(platform: dict[str, Any]) -> None:
    import html5lib

    html = platform["outputs"]["html"].decode("utf-8")
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)  # raises on any parse error
    tree = html5lib.parse(html, namespaceHTMLElements=False)
    headings = [h.text for h in tree.iter("h2")]
    assert headings == list(SECTIONS)
    assert len(re.findall(r"<svg ", html)) == 3
    assert len(set(re.findall(r' id="([^"]+)"', html))) == len(re.findall(r' id="([^"]+)"', html)), "duplicate ids"


def test_html_escapes_what_it_shows(platform: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(platform["doc"]))
    doc["summary"] = ["<script>alert(1)</script> & co"]
    doc["case_studies"][0]["name"] = "<b>x</b>"
    html = to_html(doc)
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert "<b>x</b>" not in html
    md = to_markdown(doc)
    assert "<script>" not in md and "\\<b\\>x\\</b\\>" in md


def test_markdown_has_every_section(platform: dict[str, Any]) -> None:
    md = platform["outputs"]["md"].decode("utf-8")
    assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == list(SECTIONS)


def test_pdf_renders_to_pages_with_every_section(platform: dict[str, Any], tmp_path: Path) -> None:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(io.BytesIO(platform["outputs"]["pdf"]))
    assert len(pdf) >= 3
    text = ""
    for i in range(len(pdf)):
        page = pdf[i]
        text += page.get_textpage().get_text_range() + "\n"
        if i < 2:
            image = page.render(scale=0.5).to_pil()
            image.save(tmp_path / f"page-{i + 1}.png")
            assert image.convert("L").getextrema()[0] < 100, "the page has ink"
    assert (tmp_path / "page-1.png").stat().st_size > 1000
    for heading in SECTIONS:
        assert heading in text, heading


# -- privacy ------------------------------------------------------------------------------------------------------


def _secrets(sim: Path) -> dict[str, set[str]]:
    """What must never appear in a report: identifiers, addresses and request text of the platform."""
    from stormwatch.disrupt.labels import event_text

    out: dict[str, set[str]] = {"ids": set(), "ips": set(), "prompts": set()}
    for line in (sim / "accounts.jsonl").read_text(encoding="utf-8").splitlines():
        a = json.loads(line)
        out["ids"] |= {str(a[f]) for f in ("account_id", "device_id", "payment_fingerprint", "phone_hash", "email_hash")
                       if a.get(f)}  # fmt: skip
        if a.get("signup_ip"):
            out["ips"].add(a["signup_ip"])
    for line in (sim / "events.jsonl").read_text(encoding="utf-8").splitlines():
        e = orjson.loads(line)
        for f in ("event_id", "api_key_id", "end_user_id", "conversation_id"):
            if e.get(f):
                out["ids"].add(str(e[f]))
        if e.get("ip"):
            out["ips"].add(e["ip"])
        text = " ".join(event_text(e.get("prompt"), e.get("messages")).split())
        if len(text) >= 24:
            out["prompts"].add(text[:60])
    return out


def test_no_account_id_ip_email_or_prompt_in_any_format(platform: dict[str, Any]) -> None:
    secrets = _secrets(platform["dir"] / "platform")
    assert len(secrets["ids"]) > 500 and secrets["ips"] and len(secrets["prompts"]) > 100
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(io.BytesIO(platform["outputs"]["pdf"]))
    texts = {f: platform["outputs"][f].decode("utf-8") for f in ("json", "md", "html")}
    texts["pdf"] = "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    texts["json-k3"] = json.dumps(platform["small"])
    for fmt, text in texts.items():
        flat = " ".join(text.replace("\\", "").split())
        for kind, values in secrets.items():
            leaked = sorted(v for v in values if v in flat)
            assert not leaked, f"{fmt}: {kind} leaked: {leaked[:3]}"
        emails = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.-]+", flat)) - {"security@your-organisation.example"}
        assert not emails, f"{fmt}: e-mail addresses {sorted(emails)[:3]}"
        assert not re.search(r"\b(acct|evt|dev|pf|key|conv)_[0-9a-f]{6,}", flat), fmt


def test_topic_terms_are_used_by_k_accounts(platform: dict[str, Any]) -> None:
    """Checked independently on the raw events: each term, as whole words, in requests of >= k accounts."""
    from stormwatch.disrupt.labels import event_text

    store = open_store(f"sqlite:///{platform['dir'] / 'stormwatch.db'}")
    try:
        model = store.detections.latest_model_version()
        assert model is not None
        p = platform["doc"]["period"]
        period = parse_period(None, p["from"], p["to"])
        reqs = store.analysis.flagged_requests(model, since=period.since, until=period.until)
    finally:
        store.close()
    for topic in platform["doc"]["topics"]:
        texts = [(r.account_id, event_text(r.prompt, r.messages).lower()) for r in reqs if r.top_ttp == topic["ttp"]]
        assert len({a for a, _ in texts}) >= K
        for term in topic["terms"]:
            pattern = re.compile(r"(?<![\w'-])" + r"\W+".join(map(re.escape, term.split())) + r"(?![\w'-])")
            users = {a for a, t in texts if pattern.search(t)}
            assert len(users) >= K, (topic["ttp"], term, len(users))


# -- k-suppression ------------------------------------------------------------------------------------------------


def _attack(t: dict[str, Any], k: int, *, accounts: bool) -> list[tuple[float, float, int]]:
    """An attacker's bounds for every suppressed value of a published table, from what it shows.

    Variables: the suppressed cells and totals; equations: each shown total is the sum of its cells
    (and the grand total the sum of the row and of the column totals); a ``<k`` count of accounts
    lies in 1..k-1 (in 1.. when the table counts something else), a withheld one is >= 0.
    Returns (min, max, slot) per suppressed value.
    """
    cells = t["cells"]
    n_rows, n_cols = len(cells), len(cells[0]) if cells else 0
    slots: list[Any] = [cells[i][j] for i in range(n_rows) for j in range(n_cols)]
    rt = t.get("row_totals")
    ct = t.get("col_totals")
    gt = t.get("total")
    eqs: list[list[tuple[int, int]]] = []
    if rt is not None:
        for i in range(n_rows):
            slots.append(rt[i])
            eqs.append([(len(slots) - 1, 1), *((i * n_cols + j, -1) for j in range(n_cols))])
    if ct is not None:
        for j in range(n_cols):
            slots.append(ct[j])
            eqs.append([(len(slots) - 1, 1), *((i * n_cols + j, -1) for i in range(n_rows))])
    if gt is not None:
        slots.append(gt)
        g = len(slots) - 1
        eqs.append([(g, 1), *((v, -1) for v in range(n_rows * n_cols))])
    hidden = [s for s, v in enumerate(slots) if not isinstance(v, int)]
    if not hidden:
        return []
    col = {s: i for i, s in enumerate(hidden)}
    a_eq, b_eq = [], []
    for eq in eqs:
        row = [0.0] * len(hidden)
        rhs = 0.0
        for s, c in eq:
            if s in col:
                row[col[s]] += c
            else:
                rhs -= c * slots[s]
        if any(row):
            a_eq.append(row)
            b_eq.append(rhs)
        else:
            assert abs(rhs) < 1e-9, "the published totals do not add up"
    bounds = [((1.0, float(k - 1) if accounts else None) if slots[s] == f"<{k}" else (0.0, None)) for s in hidden]
    out = []
    for s in hidden:
        c = [0.0] * len(hidden)
        c[col[s]] = 1.0
        if not a_eq:
            lo_b, hi_b = bounds[col[s]]
            out.append((lo_b, float("inf") if hi_b is None else hi_b, s))
            continue
        lo = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        c[col[s]] = -1.0
        hi = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        assert lo.status in (0, 3) and hi.status in (0, 3), "the attacker's system is infeasible"
        out.append((lo.fun if lo.status == 0 else 0.0, -hi.fun if hi.status == 0 else float("inf"), s))
    return out


def _check_table(t: dict[str, Any], k: int, *, accounts: bool, truth: list[int] | None = None) -> None:
    shown = [v for row in t["cells"] for v in row]
    shown += list(t.get("row_totals") or []) + list(t.get("col_totals") or [])
    shown += [t["total"]] if t.get("total") is not None else []
    for v in shown:
        assert v in (f"<{k}", WITHHELD) or (isinstance(v, int) and (v == 0 or v >= k)), v
    for lo, hi, slot in _attack(t, k, accounts=accounts):
        assert hi - lo >= 1 - 1e-6, f"suppressed value {slot} pinned to {lo}..{hi}: {t}"
        if truth is not None:
            assert lo - 1e-6 <= truth[slot] <= hi + 1e-6


small_counts = st.one_of(st.integers(0, 3), st.integers(1, 15), st.integers(0, 60))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 4),
    k=st.integers(3, 12),
    totals=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    accounts=st.booleans(),
    data=st.data(),
)
def test_k_suppression_property(
    rows: int, cols: int, k: int, totals: tuple[bool, bool, bool], accounts: bool, data: Any
) -> None:
    """Random tables of accounts, or of requests with the accounts behind each cell (then a ``<k`` is >= 1)."""
    values = [[data.draw(small_counts) for _ in range(cols)] for _ in range(rows)]
    rt, ct, gt = totals
    opts: dict[str, Any] = {"row_totals": rt, "col_totals": ct, "grand_total": gt}
    if not accounts:  # requests: 1..n accounts behind a cell of n requests; a total has at least its largest cell's
        who = [[data.draw(st.integers(min(v, 1), v)) for v in row] for row in values]
        opts["contributors"] = who
        opts["total_contributors"] = (
            [max(r) for r in who],
            [max(who[i][j] for i in range(rows)) for j in range(cols)],
            max(max(r) for r in who),
        )
    t = suppress(values, k, **opts).to_dict()
    truth = [v for row in values for v in row]
    truth += [sum(r) for r in values] if rt else []
    truth += [sum(values[i][j] for i in range(rows)) for j in range(cols)] if ct else []
    truth += [sum(truth[: rows * cols])] if gt else []
    _check_table(t, k, accounts=accounts, truth=truth)
    for i in range(rows):  # what is shown is true, and never fewer than k accounts
        for j in range(cols):
            if isinstance(t["cells"][i][j], int):
                assert t["cells"][i][j] == values[i][j]
                assert accounts or values[i][j] == 0 or opts["contributors"][i][j] >= k


def test_one_suppressed_cell_gets_a_complement() -> None:
    t = suppress([[25], [3], [40]], 10, col_totals=True)
    assert t.cells[1][0] == "<10"
    assert sum(not isinstance(r[0], int) for r in t.cells) >= 2 or not isinstance(t.col_totals[0], int)  # type: ignore[index]
    assert count(9, 10) == "<10" and count(0, 10) == 0 and count(10, 10) == 10
    assert count(50, 10, contributors=4) == "<10"


@pytest.mark.parametrize("k", [K, 3])
def test_every_table_of_the_report_is_suppressed(platform: dict[str, Any], k: int) -> None:
    doc = platform["doc"] if k == K else platform["small"]
    tables = _tables(doc)
    assert any(not isinstance(v, int) for t in tables for row in t["cells"] for v in row), "something is suppressed"
    for t in tables:
        _check_table(t, k, accounts=t["row_key"] not in ("day", "refused"))
    for case in doc["case_studies"]:
        assert case["accounts"] == f"<{k}" or case["accounts"] >= k
        for p in case["narrative"]:
            for n in re.findall(r"\b\d+\b", re.sub(r"LLMT-\d\d", "", p)):
                assert int(n) >= k, (n, p)


# -- the command --------------------------------------------------------------------------------------------------


def test_periods() -> None:
    from stormwatch.errors import InputError

    jan = parse_period("2024-01")
    assert (jan.since, jan.until, jan.label) == ("2024-01-01T00:00:00", "2024-02-01T00:00:00", "January 2024")
    assert parse_period("2024-12").until == "2025-01-01T00:00:00"
    days = parse_period(None, "2024-01-08", "2024-01-21")
    assert len(days.days()) == 14 and days.label == "2024-01-08 to 2024-01-21"
    assert days.contains("2024-01-21T23:59:59Z") and not days.contains("2024-01-22T00:00:00Z")
    assert covering("2024-01-08T00:00:00Z", "2024-01-22T00:00:00Z") == days
    for bad in [("2024-1",), (None, "2024-01-01", None), (None, "2024-02-30", "2024-03-01"),
                (None, "2023-01-01", "2024-12-31")]:  # fmt: skip
        with pytest.raises(InputError):
            parse_period(*bad)


def test_cli_writes_each_format_and_rejects_a_bad_period(platform: dict[str, Any], tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{platform['dir'] / 'stormwatch.db'}"]
    p = platform["doc"]["period"]
    for fmt in ("md", "json"):
        out = tmp_path / f"r.{fmt}"
        assert main([*db, "report", "--from", p["from"], "--to", p["to"], "--format", fmt, "-o", str(out)]) == 0
        assert "1. Scope" in out.read_text(encoding="utf-8") or fmt == "json"
    assert main([*db, "report", "--period", "2024-13", "-o", str(tmp_path / "x.md")]) == 4
    assert main([*db, "report", "--period", "2024-01", "--from", "2024-01-01", "-o", str(tmp_path / "x.md")]) == 4
    assert main([*db, "report", "--from", "2024-02-01", "--to", "2024-01-01", "-o", str(tmp_path / "x.md")]) == 4
    assert not (tmp_path / "x.md").exists()


def test_an_empty_store_gives_a_valid_report(tmp_path: Path) -> None:
    import html5lib

    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        doc = build_report(store, parse_period("2024-01"), k=K)
    finally:
        store.close()
    assert doc["case_studies"] == [] and doc["topics"] == []
    html5lib.HTMLParser(strict=True).parse(render(doc, "html").decode("utf-8"))
    assert "No operation was attributed" in render(doc, "md").decode("utf-8")
