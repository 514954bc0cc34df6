"""The registry of ingest formats.

Formats are plugins (:mod:`stormwatch.plugins`, hook ``stormwatch_formats``: name -> Format
class). The built-ins are in :mod:`stormwatch.ingest.plugin` and are loaded exactly like third-party
ones, which register through the ``stormwatch`` entry-point group or the older
``stormwatch.parsers`` group (``[project.entry-points."stormwatch.parsers"] myformat =
"pkg.mod:MyFormat"``). A built-in that cannot be loaded is an error, never skipped.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from stormwatch import plugins
from stormwatch.errors import InputError
from stormwatch.ingest.formats.base import Format, FormatOptions, Parsed, Rejected, read_head

__all__ = ["Format", "FormatOptions", "Parsed", "Rejected", "formats", "get_format", "sniff_format"]


@cache
def _formats(generation: int) -> dict[str, Format]:
    found: dict[str, Format] = {}
    for entry in plugins.entries("formats").values():
        obj = entry.load()
        fmt = obj() if isinstance(obj, type) else obj
        name = getattr(fmt, "name", None)
        if not isinstance(name, str) or not name:
            raise plugins.PluginError(
                f"plugin {entry.plugin!r}: format {entry.name!r} ({entry.spec}) has no name", plugin=entry.plugin
            )
        found.setdefault(name, fmt)
    return found


def formats() -> dict[str, Format]:
    """Every registered format by name, built-ins first (loaded once per set of plugins)."""
    return _formats(plugins.generation())


def get_format(name: str) -> Format:
    try:
        return formats()[name]
    except KeyError:
        raise InputError(f"unknown format {name!r}", hint=f"choose one of: {', '.join(sorted(formats()))}") from None


def sniff_format(path: Path) -> Format:
    """Pick the format whose ``sniff`` is most confident about this file's first bytes."""
    head = read_head(path)
    if not head.strip():
        return formats()["canonical"]  # an empty file reads as zero canonical records
    best: tuple[float, Format] | None = None
    for fmt in formats().values():
        score = fmt.sniff(head, path)
        if score > 0 and (best is None or score > best[0]):
            best = (score, fmt)
    if best is None:
        raise InputError(
            f"{path}: could not recognise the format from its first bytes",
            hint=f"name it with --format (one of: {', '.join(sorted(formats()))})",
        )
    return best[1]
