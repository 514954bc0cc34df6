"""Measures of the house (issue 10), used by tests/test_architecture.py and printed by
``.venv/bin/python tests/architecture_metrics.py``.

* SQL statements outside ``store/``: string literals (and f-string heads) that start with a SQL verb.
* dialect checks outside ``store/``: ``.dialect`` read anywhere but the store.
* positional row reads outside ``store/``: ``r[3]``, ``row[0]``, ``rows[0][1]`` (names that hold database rows).
* modules over 500 lines, and those of them without a "Why this module is long" paragraph.
* import circles between modules (strongly connected components of the module import graph).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "stormwatch"
SQL = re.compile(
    r"^\s*(SELECT\s.*\sFROM\s|SELECT\s+\w+\(|INSERT\s+(OR\s+\w+\s+)?INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s"
    r"|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW)\s|ALTER\s+TABLE\s|DROP\s+(TABLE|INDEX)\s|WITH\s+\w+\s+AS\b|PRAGMA\s)",
    re.I | re.S,
)
ROW_NAMES = {"r", "row", "rows", "rec", "res", "result"}
LONG = 500
REASON = "Why this module is long"


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _in_store(name: str) -> bool:
    return name == "stormwatch.store" or name.startswith("stormwatch.store.")


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str):
                yield node.lineno, head.value


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(first.lineno)
    return out


def sql_outside_store() -> list[str]:
    found = []
    for name, path in modules():
        if _in_store(name):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for line, text in _strings(tree):
            if (
                line not in docs
                and SQL.match(text)
                and (" FROM " in text.upper() or not text.upper().startswith("SELECT"))
            ):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    return found


def dialect_checks_outside_store() -> list[str]:
    found = []
    for name, path in modules():
        if _in_store(name):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "dialect":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def positional_row_reads_outside_store() -> list[str]:
    found = []
    for name, path in modules():
        if _in_store(name):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, int)
                and isinstance(node.value, ast.Name)
                and node.value.id in ROW_NAMES
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def long_modules() -> dict[str, tuple[int, bool]]:
    """Modules over 500 lines -> (lines, has a written reason)."""
    out = {}
    for _name, path in modules():
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        if n > LONG:
            doc = ast.get_docstring(ast.parse(text)) or ""
            out[str(path.relative_to(ROOT))] = (n, REASON.lower() in doc.lower())
    return out


def import_graph() -> dict[str, set[str]]:
    names = dict(modules())
    graph: dict[str, set[str]] = {n: set() for n in names}
    for name, path in names.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for sub in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in names:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):
                    graph[name].add(t)
    return graph


def import_circles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def report() -> dict[str, object]:
    long = long_modules()
    return {
        "sql_statements_outside_store": len(sql_outside_store()),
        "dialect_checks_outside_store": len(dialect_checks_outside_store()),
        "positional_row_reads_outside_store": len(positional_row_reads_outside_store()),
        "modules_over_500_lines": len(long),
        "modules_over_500_lines_without_reason": sum(1 for _, ok in long.values() if not ok),
        "import_circles": len(import_circles()),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(report(), indent=2))
    if "-v" in sys.argv:
        print("\n".join(sql_outside_store()))
        print(json.dumps(long_modules(), indent=2))
        print(import_circles())
