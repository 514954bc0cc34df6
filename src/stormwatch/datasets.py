"""Names of the public prompt datasets stormwatch ships data from (shared by training and the simulator)."""

from __future__ import annotations

#: first-turn everyday prompts (benign); each is its own source for balancing and evaluation
EVERYDAY_SOURCES: tuple[str, ...] = (
    "arena_hard_v01",
    "banking77",
    "clinc150",
    "dolly15k_partial",
    "gpteacher",
    "gsm8k",
    "humaneval",
    "hwu64",
    "mgsm",
    "mmlu",
    "mt_bench",
    "nq_open",
    "oasst1_prompts",
    "snips",
    "vicuna_bench",
    "xsid",
)
