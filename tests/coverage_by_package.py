"""Line and branch coverage per package, from coverage.py's JSON report (``make test`` prints it).

    .venv/bin/python tests/coverage_by_package.py coverage.json [--min-branch 80]

Exit 0 always unless ``--fail-under-branch`` is given; the table is what a reviewer reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def package_of(path: str) -> str:
    parts = Path(path).parts
    i = parts.index("stormwatch")
    rest = parts[i + 1 :]
    return "stormwatch" if len(rest) <= 1 else f"stormwatch.{rest[0]}"


def summarise(report: dict) -> dict[str, dict[str, float]]:
    acc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path, f in report["files"].items():
        s = f["summary"]
        a = acc[package_of(path)]
        a["statements"] += s["num_statements"]
        a["covered"] += s["covered_lines"]
        a["branches"] += s.get("num_branches", 0)
        a["covered_branches"] += s.get("covered_branches", 0)
    out = {}
    for pkg, a in sorted(acc.items()):
        out[pkg] = {
            "lines": 100.0 * a["covered"] / a["statements"] if a["statements"] else 100.0,
            "branches": 100.0 * a["covered_branches"] / a["branches"] if a["branches"] else 100.0,
            "statements": a["statements"],
            "branch_count": a["branches"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("report", type=Path)
    ap.add_argument("--fail-under-branch", type=float, default=None)
    args = ap.parse_args(argv)
    rows = summarise(json.loads(args.report.read_text()))
    print(f"{'package':28} {'lines %':>8} {'branches %':>11} {'statements':>11} {'branches':>9}")
    for pkg, r in rows.items():
        print(f"{pkg:28} {r['lines']:8.1f} {r['branches']:11.1f} {r['statements']:11d} {r['branch_count']:9d}")
    low = [p for p, r in rows.items() if args.fail_under_branch is not None and r["branches"] < args.fail_under_branch]
    if low:
        print(f"below {args.fail_under_branch}% branch coverage: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
