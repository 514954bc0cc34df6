"""Detection's built-in plugin: the built-in detectors and ``classify`` / ``train`` / ``eval``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl

#: name -> detector class, in the order `available_detectors()` lists them
DETECTORS: tuple[tuple[str, str], ...] = (
    ("first_tier", "stormwatch.detect.first_tier:FirstTierDetector"),
    ("keyword", "stormwatch.detect.base:KeywordDetector"),
    ("embedding", "stormwatch.detect.embedding:EmbeddingDetector"),
    ("judge", "stormwatch.detect.judge:JudgeDetector"),
    ("encoder", "stormwatch.detect.encoder:EncoderDetector"),
    ("cascade", "stormwatch.detect.cascade_detector:CascadeDetector"),
)


@hookimpl
def stormwatch_detectors() -> Mapping[str, str]:
    return dict(DETECTORS)


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "classify": Command(
            "stormwatch.detect.cli:classify_command", "Score prompts for misuse on the LLM-TTP taxonomy."
        ),
        "train": Command("stormwatch.detect.cli:train_command", "Rebuild the first-tier detection model."),
        "eval": Command("stormwatch.detect.cli:eval_command", "Evaluate detectors on labelled prompts."),
    }
