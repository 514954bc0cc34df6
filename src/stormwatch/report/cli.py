"""``stormwatch report``: write the transparency report for a period."""

from __future__ import annotations

from pathlib import Path

import click

from stormwatch.clitools import open_ctx_store, output_option


@click.command("report")
@click.option("--period", metavar="YYYY-MM", help="The month to report on.")
@click.option("--from", "since", metavar="YYYY-MM-DD", help="First day (with --to, instead of --period).")
@click.option("--to", "until", metavar="YYYY-MM-DD", help="Last day, included.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf", "md", "json"]),
    default="html",
    show_default=True,
    help="html and pdf carry the charts; json is the document the others are drawn from.",
)
@output_option(required=True, help="File to write.")
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=2),
    default=10,
    show_default=True,
    help="Suppress every count of fewer than k accounts.",
)
@click.pass_context
def report_command(
    ctx: click.Context, period: str | None, since: str | None, until: str | None, fmt: str, output: Path, k: int
) -> None:
    """Write a transparency report: aggregates (k-suppressed), topics, case studies, safeguards.

    \b
    Examples:
      stormwatch report --period 2024-01 --format html -o report.html
      stormwatch report --from 2024-01-08 --to 2024-01-21 --format pdf -o report.pdf -k 20
    """
    from stormwatch.report.build import build_report
    from stormwatch.report.period import parse_period
    from stormwatch.report.render import write_report

    p = parse_period(period, since, until)
    with open_ctx_store(ctx) as store:
        doc = build_report(store, p, k=k)
    n = write_report(doc, fmt, output)
    click.echo(f"wrote {output} ({fmt}, {n:,} bytes): {p.label}, k = {k}, {len(doc['case_studies'])} case studies")
