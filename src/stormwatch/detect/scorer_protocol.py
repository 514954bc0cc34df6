"""The scoring interface every detector choice offers (first tier, encoder, cascade).

Its own module so that the conversation rule can name it without importing the scorers
(:mod:`stormwatch.detect.scorer` loads them, and they use the conversation rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Scorer"]


class Scorer(Protocol):
    version: str
    thresholds: dict[str, float]

    def score_with_categories(self, texts: Sequence[str]) -> tuple[Any, Any]: ...

    def score_texts(self, texts: Sequence[str]) -> Any: ...

    def explain_text(self, text: str, top: int = 8) -> list[dict[str, Any]]: ...
