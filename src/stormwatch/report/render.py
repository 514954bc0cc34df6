"""Write a report document as json, md, html (inline SVG charts) or pdf (WeasyPrint, extra ``report-pdf``).

Templates are Jinja2 (``report/templates``); HTML autoescapes every value, and the charts are built
from escaped text (:mod:`stormwatch.report.charts`) before they are marked safe.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stormwatch.errors import ConfigError, InputError

__all__ = ["FORMATS", "render", "to_html", "to_json", "to_markdown", "to_pdf", "write_report"]

FORMATS = ("html", "pdf", "md", "json")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph (no markup, no HTML, no line breaks)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _env(autoescape: bool) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stormwatch.report", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _md
    return env


def to_json(doc: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def to_markdown(doc: dict[str, Any]) -> str:
    text: str = _env(False).get_template("report.md.j2").render(r=doc, m=doc["metrics"])
    return re.sub(r"\n{3,}", "\n\n", text)


def to_html(doc: dict[str, Any]) -> str:
    from markupsafe import Markup

    from stormwatch.report import charts

    k = int(doc["k"])
    drawn = {
        "accounts": Markup(charts.accounts_chart(doc["metrics"], k)),
        "time_to_action": Markup(charts.time_to_action_chart(doc["metrics"], k)),
        "daily": Markup(charts.daily_chart(doc["daily"], k)),
    }
    html: str = _env(True).get_template("report.html.j2").render(r=doc, m=doc["metrics"], charts=drawn)
    return html


def to_pdf(doc: dict[str, Any]) -> bytes:
    """The HTML rendered by WeasyPrint (``pip install 'stormwatch[report-pdf]'``; needs Pango)."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Python package is there, Pango is not
        raise ConfigError(
            f"PDF output needs WeasyPrint and Pango: {exc}",
            hint="pip install 'stormwatch[report-pdf]'; on Debian/Ubuntu also apt-get install libpango-1.0-0 "
            "libpangoft2-1.0-0 fonts-dejavu-core",
        ) from exc
    pdf: bytes = weasyprint.HTML(string=to_html(doc)).write_pdf()
    return pdf


def render(doc: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return to_json(doc)
    if fmt == "md":
        return to_markdown(doc).encode("utf-8")
    if fmt == "html":
        return to_html(doc).encode("utf-8")
    if fmt == "pdf":
        return to_pdf(doc)
    raise InputError(f"unknown report format {fmt!r}", hint=f"one of {', '.join(FORMATS)}")


def write_report(doc: dict[str, Any], fmt: str, out: Path) -> int:
    """Write atomically (a temporary file beside ``out``, then renamed); return the bytes written."""
    data = render(doc, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return len(data)
