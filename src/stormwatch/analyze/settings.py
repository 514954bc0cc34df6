"""Analyze settings: the review budget and the exemption files.

Sources, later ones winning: defaults < ``stormwatch.toml`` ``[analyze]`` (current directory, or the
path given) < explicit CLI options (``analyze --review-budget``, ``--exemptions``)::

    [analyze]
    review_budget = 0.005                       # a fraction of active accounts (0.5 %), "0.5%", or a count: 200
    exemptions = ["policies/exemptions.yaml"]   # files or folders; relative to this file's folder
    account_model = "off"                       # order the review queue by risk (default: the newest
                                                # shipped account model; a version or a folder)
    account_model_shadow = ["account-1.0+..."]  # account models scored in shadow (analyze eval compares)

The default budget is ``params.REVIEW_BUDGET`` (0.5 % of active accounts); no exemptions by default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stormwatch.analyze.review import DEFAULT_BUDGET, ReviewBudget
from stormwatch.errors import ConfigError, InputError

__all__ = ["AnalyzeSettings", "load_settings"]


@dataclass(frozen=True, slots=True)
class AnalyzeSettings:
    review_budget: ReviewBudget = DEFAULT_BUDGET
    exemptions: tuple[Path, ...] = ()  # exemptions files or folders
    account_model: str | None = None  # a version or folder; "off": rank by risk; None: the newest shipped
    account_model_shadow: tuple[str, ...] = ()  # models scored in shadow


def load_settings(
    path: str | Path | None = None,
    *,
    review_budget: object | None = None,
    exemptions: Sequence[str | Path] | None = None,
    account_model: str | None = None,
) -> AnalyzeSettings:
    """Merge the settings sources (see module doc); a bad setting in the file is a ConfigError naming it."""
    file = Path(path) if path is not None else Path("stormwatch.toml")
    if path is not None and not file.is_file():
        raise ConfigError(f"{file}: no such settings file")
    section: dict[str, Any] = {}
    if file.is_file():
        try:
            with open(file, "rb") as fh:
                section = dict(tomllib.load(fh).get("analyze", {}))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not TOML: {exc}") from exc
    known = {"review_budget", "exemptions", "account_model", "account_model_shadow"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{file}: [analyze] {unknown[0]}: unknown setting; expected {', '.join(sorted(known))}")
    budget = DEFAULT_BUDGET
    if review_budget is not None:
        budget = ReviewBudget.parse(review_budget)
    elif section.get("review_budget") is not None:
        try:
            budget = ReviewBudget.parse(section["review_budget"])
        except InputError as exc:
            raise ConfigError(f"{file}: [analyze] review_budget: {exc}") from exc
    paths: tuple[Path, ...] = ()
    if exemptions:
        paths = tuple(Path(p) for p in exemptions)
    elif "exemptions" in section:
        listed = section["exemptions"]
        listed = [listed] if isinstance(listed, str) else listed
        if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
            raise ConfigError(f"{file}: [analyze] exemptions: expected a path or a list of paths")
        paths = tuple(p if p.is_absolute() else file.parent / p for p in map(Path, listed))
    model = account_model if account_model is not None else section.get("account_model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f'{file}: [analyze] account_model: expected a version, a folder or "off"')
    shadow = section.get("account_model_shadow", [])
    shadow = [shadow] if isinstance(shadow, str) else shadow
    if not isinstance(shadow, list) or not all(isinstance(v, str) for v in shadow):
        raise ConfigError(f"{file}: [analyze] account_model_shadow: expected a version or a list of versions")
    return AnalyzeSettings(budget, paths, model, tuple(shadow))
