"""Versioned schema migrations, as SQL files in ``stormwatch/store/schema/``.

``NNNN_name.sqlite.sql`` and ``NNNN_name.postgres.sql`` hold migration ``NNNN`` for each dialect
(both must exist). Each is applied once, in order, in a transaction, and recorded in
``schema_migrations``. Never edit a released migration; add the next number. Statements are
separated by ``;`` at the end of a line; the first ``--`` comment line names the migration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sqlite|postgres)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres: str

    def statements(self, dialect: str) -> list[str]:
        sql = self.sqlite if dialect == "sqlite" else self.postgres
        body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


@cache
def load_migrations() -> tuple[Migration, ...]:
    found: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for entry in resources.files("stormwatch.store").joinpath("schema").iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version = int(m.group(1))
        text = entry.read_text(encoding="utf-8")
        found.setdefault(version, {})[m.group(3)] = text
        first = text.splitlines()[0] if text else ""
        names[version] = first.removeprefix("--").strip() if first.startswith("--") else m.group(2)
    out = []
    for version in sorted(found):
        pair = found[version]
        if set(pair) != {"sqlite", "postgres"}:
            raise RuntimeError(f"migration {version:04d} needs both a .sqlite.sql and a .postgres.sql file")
        out.append(Migration(version, names[version], pair["sqlite"], pair["postgres"]))
    return tuple(out)


MIGRATIONS = load_migrations()
LATEST = MIGRATIONS[-1].version
