"""The ``local`` engine: today's single-node pipeline (:func:`stormwatch.analyze.pipeline.analyze`), unchanged."""

from __future__ import annotations

from stormwatch.analyze.pipeline import analyze as analyze_local

__all__ = ["analyze_local"]
