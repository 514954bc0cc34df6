"""The review budget and the ranked review queue.

Analysts can review only so many accounts. The budget says how many: a share of the *active*
accounts (accounts with at least one event; default ``params.REVIEW_BUDGET`` = 0.5 %) or a fixed
count. Every account at level ``review`` that no exemption holds is ranked, riskiest first (ties by
account id), and gets ``review_rank`` (1 = first) and ``within_budget`` (rank <= budget). Accounts
beyond the budget stay at ``review``, marked outside it: nothing is dropped.

The ranking takes ``(account_id, score)`` pairs, so the score can be the calibrated probability of
a learned model instead of today's risk without touching this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from stormwatch.analyze import params as P
from stormwatch.errors import InputError

__all__ = ["DEFAULT_BUDGET", "QueuePlace", "ReviewBudget", "rank_review_queue"]

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


@dataclass(frozen=True, slots=True)
class ReviewBudget:
    """How many review accounts are within the budget: ``fraction`` of active accounts, or ``count``."""

    fraction: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.count is None):
            raise InputError("a review budget is either a fraction of active accounts or a count")
        if self.fraction is not None and not (0.0 < self.fraction <= 1.0 and math.isfinite(self.fraction)):
            raise InputError(f"review budget fraction must be in (0, 1], got {self.fraction!r}")
        if self.count is not None and self.count < 0:
            raise InputError(f"review budget count must be >= 0, got {self.count!r}")

    def size(self, active_accounts: int) -> int:
        """Accounts within the budget on a platform with ``active_accounts`` active accounts."""
        if self.count is not None:
            return self.count
        assert self.fraction is not None
        return math.ceil(self.fraction * max(active_accounts, 0) - 1e-9)

    def describe(self) -> str:
        if self.count is not None:
            return f"{self.count:,} accounts"
        assert self.fraction is not None
        return f"{self.fraction * 100:g}% of active accounts"

    @classmethod
    def parse(cls, value: object) -> ReviewBudget:
        """``0.005`` or ``"0.005"`` (a fraction), ``"0.5%"`` (a percentage), ``200`` or ``"200"`` (a count).

        A number with a decimal point is a fraction in (0, 1]; a whole number is a count.
        """
        if isinstance(value, ReviewBudget):
            return value
        if isinstance(value, bool):
            raise InputError(f"review budget must be a fraction or a count, got {value!r}")
        if isinstance(value, int):
            return cls(count=value)
        if isinstance(value, float):
            return cls(fraction=value)
        if isinstance(value, str):
            text = value.strip()
            m = _PERCENT.match(text)
            if m:
                return cls(fraction=float(m.group(1)) / 100.0)
            if re.fullmatch(r"\d+", text):
                return cls(count=int(text))
            try:
                return cls(fraction=float(text))
            except ValueError:
                pass
        raise InputError(
            f"review budget must be a fraction (0.005), a percentage (0.5%) or a count (200), got {value!r}"
        )


DEFAULT_BUDGET = ReviewBudget(fraction=P.REVIEW_BUDGET)


@dataclass(frozen=True, slots=True)
class QueuePlace:
    rank: int  # 1 = first
    within_budget: bool


def rank_review_queue(candidates: Iterable[tuple[str, float]], budget_size: int) -> dict[str, QueuePlace]:
    """Rank ``(account_id, score)`` pairs highest score first (ties by account id); the first
    ``budget_size`` are within the budget."""
    ordered = sorted(candidates, key=lambda c: (-c[1], c[0]))
    return {a: QueuePlace(i, i <= budget_size) for i, (a, _score) in enumerate(ordered, start=1)}
