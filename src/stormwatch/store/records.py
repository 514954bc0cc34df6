"""The base of the frozen records the repositories return: ``to_dict()`` gives JSON-ready values.

Nested records, tuples, lists and dicts are converted recursively (tuples become lists), so a record
holding other records (``CaseDetail`` holding a ``Case`` and its ``Decision``s) serialises in one call.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

__all__ = ["Record", "now_iso", "plain"]


def now_iso() -> str:
    """The time now as stored: UTC, microseconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Record:
    """Mixin for frozen dataclasses: ``to_dict()`` with every field, recursively made plain."""

    def to_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def plain(value: Any) -> Any:
    """``value`` with records turned into dicts and tuples into lists (str/int/float/bool/None stay)."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value
