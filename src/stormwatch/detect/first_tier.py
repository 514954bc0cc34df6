"""The first-tier detector plugin: the shipped lexical model behind the Detector protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stormwatch.detect.base import BaseDetector, DetectorTags
from stormwatch.detect.model import FirstTierModel, load_model
from stormwatch.detect.text import item_text, item_turns
from stormwatch.vocab import LLMT_IDS

__all__ = ["FirstTierDetector"]


def _is_conversation(item: Any) -> bool:
    turns = item_turns(item)
    return sum(1 for t in turns if t["role"] == "user") > 1 or any(t["role"] == "assistant" for t in turns)


class FirstTierDetector(BaseDetector):
    """Word n-gram linear model, calibrated; scores texts, events and conversations.

    ``model_path=None`` uses the artifact shipped in the package. ``fit`` trains a new artifact
    from ``items`` (rows with ``text``/``label``/``source``/``split_hint``) when labels are given,
    otherwise it just loads the model; it needs the ``train`` extra.
    Events with several user turns (or assistant turns) are scored with the conversation rule
    (:func:`stormwatch.detect.conversation.score_conversation`).
    """

    name: ClassVar[str] = "first_tier"

    def __init__(self, *, model_path: str | None = None, conversations: bool = True) -> None:
        self.model_path = model_path
        self.conversations = conversations

    # -- model access ---------------------------------------------------------------------------
    @property
    def model(self) -> FirstTierModel:
        fitted: FirstTierModel | None = getattr(self, "model_", None)
        if fitted is not None:
            return fitted
        return load_model(Path(self.model_path) if self.model_path else None)

    def fit(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> FirstTierDetector:
        if labels is None:
            self.model_ = self.model
            return self
        if len(labels) != len(items):
            raise ValueError("items and labels differ in length")
        from stormwatch.detect.data import Row
        from stormwatch.detect.train import train_artifact

        rows = []
        for i, (it, y) in enumerate(zip(items, labels, strict=True)):
            meta = it if isinstance(it, dict) else {}
            text = item_text(it)
            rows.append(
                Row(
                    id=str(meta.get("id", i)),
                    source=str(meta.get("source", "fit")),
                    text=text,
                    label=int(y),
                    category=str(meta.get("category", "")),
                    split=str(meta.get("split_hint", "train")),
                    group=text,
                    use=True,
                    cats=tuple(meta.get("cats", ())),
                )
            )
        art = train_artifact(rows)
        from stormwatch.detect.train import serialize

        serialize(art)  # fills the version (data + recipe hash)
        self.model_ = FirstTierModel(art)
        return self

    # -- protocol ---------------------------------------------------------------------------------
    def score(self, items: Sequence[Any]) -> list[float]:
        return [float(s) for s in self.score_full(items)[0]]

    def score_categories(self, items: Sequence[Any]) -> list[dict[str, float]]:
        _, cats = self.score_full(items)
        return [dict(zip(LLMT_IDS, (float(v) for v in row), strict=True)) for row in cats]

    def score_full(self, items: Sequence[Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(scores, categories[n, 14]) for items; conversations take the conversation rule."""
        model = self.model
        n = len(items)
        conv_idx = [i for i, it in enumerate(items) if self.conversations and _is_conversation(it)]
        scores = np.zeros(n, dtype=np.float64)
        cats = np.zeros((n, len(LLMT_IDS)), dtype=np.float64)
        conv = set(conv_idx)
        plain = [i for i in range(n) if i not in conv] if conv else list(range(n))
        if plain:
            s, c = model.score_with_categories([item_text(items[i]) for i in plain])
            scores[plain] = s
            cats[plain] = c
        if conv_idx:
            from stormwatch.detect.conversation import score_conversation

            for i in conv_idx:
                res = score_conversation(item_turns(items[i]), model=model)
                scores[i] = res["score"]
                cats[i] = [res["categories"][c] for c in LLMT_IDS]
        return scores, cats

    def explain(self, item: Any) -> list[dict[str, Any]]:
        if self.conversations and _is_conversation(item):
            from stormwatch.detect.conversation import score_conversation

            explanation: list[dict[str, Any]] = score_conversation(item_turns(item), model=self.model)["explanation"]
            return explanation
        return self.model.explain_text(item_text(item))

    def tags(self) -> DetectorTags:
        try:
            version = self.model.version
        except FileNotFoundError:
            version = "unavailable"
        return DetectorTags(
            requires_fit=False, input_kinds=("text", "event", "conversation"), stateless=True, version=version
        )
