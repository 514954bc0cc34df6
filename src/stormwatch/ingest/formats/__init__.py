"""The registry of ingest formats.

Built-in formats are listed in :data:`DEFAULT_PLUGINS` as ``module:attribute`` strings and are
loaded exactly like third-party ones, which register under the ``stormwatch.parsers``
entry-point group (``[project.entry-points."stormwatch.parsers"] myformat = "pkg.mod:MyFormat"``).
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from stormwatch.errors import InputError
from stormwatch.ingest.formats.base import Format, FormatOptions, Parsed, Rejected, read_head

DEFAULT_PLUGINS: tuple[str, ...] = (
    "stormwatch.ingest.formats.canonical:CanonicalFormat",
    "stormwatch.ingest.formats.openai_batch:OpenAIBatchFormat",
    "stormwatch.ingest.formats.openai_http:OpenAIHttpLogFormat",
    "stormwatch.ingest.formats.litellm:LiteLLMFormat",
)

__all__ = ["Format", "FormatOptions", "Parsed", "Rejected", "formats", "get_format", "sniff_format"]


def _load(spec: str) -> Format:
    module_name, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    instance = obj() if isinstance(obj, type) else obj
    if os.environ.get("STORMWATCH_TRACE_PLUGINS"):
        print(f"stormwatch: loaded parser {spec}", file=sys.stderr)
    return instance  # type: ignore[no-any-return]


@cache
def formats() -> dict[str, Format]:
    """Every registered format by name, built-ins first."""
    found: dict[str, Format] = {}
    for spec in DEFAULT_PLUGINS:
        try:
            fmt = _load(spec)
        except ModuleNotFoundError:
            continue  # a built-in whose module is not present in this build
        found[fmt.name] = fmt
    for ep in entry_points(group="stormwatch.parsers"):
        fmt = _load(ep.value)
        found.setdefault(fmt.name, fmt)
    return found


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
