"""The detectors the settings choose, behind the Detector protocol: ``--detectors cascade`` (the
default of ``classify``), ``first_tier`` or ``encoder`` (see :mod:`stormwatch.detect.scorer`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from stormwatch.detect.base import DetectorTags
from stormwatch.detect.first_tier import FirstTierDetector
from stormwatch.detect.text import item_text
from stormwatch.errors import InputError

__all__ = ["CascadeDetector"]


class CascadeDetector(FirstTierDetector):
    """The cascade behind the Detector protocol (``--detectors cascade``, the default of ``classify``).

    Conversations take the conversation rule over the cascade's scores; ``decisions`` says which
    tier decided each item (the text scored: the last user turn, or the prompt).
    """

    name: ClassVar[str] = "cascade"

    def __init__(
        self,
        *,
        model_path: str | None = None,
        encoder_path: str | None = None,
        detectors: str = "cascade",
        conversations: bool = True,
    ) -> None:
        self.model_path = model_path
        self.encoder_path = encoder_path
        self.detectors = detectors
        self.conversations = conversations

    @property
    def model(self) -> Any:
        fitted = getattr(self, "model_", None)
        if fitted is not None:
            return fitted
        from stormwatch.detect.scorer import load_scorer

        return load_scorer(self.detectors, model_path=self.model_path, encoder_path=self.encoder_path)

    def fit(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> CascadeDetector:
        if labels is not None:
            raise ValueError("the cascade is trained by `stormwatch train` and `stormwatch train --model encoder`")
        self.model_ = self.model
        return self

    def decisions(self, items: Sequence[Any]) -> list[dict[str, Any] | None]:
        model = self.model
        from stormwatch.detect.cascade import CascadeModel

        if not isinstance(model, CascadeModel):
            return [None] * len(items)
        return [d.to_dict() for d in model.decisions([item_text(it) for it in items])]

    def tags(self) -> DetectorTags:
        try:
            version = self.model.version
        except (FileNotFoundError, InputError):
            version = "unavailable"
        return DetectorTags(
            requires_fit=False, input_kinds=("text", "event", "conversation"), stateless=True, version=version
        )
