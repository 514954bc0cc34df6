"""Ingest's built-in plugin: the five built-in formats and ``stormwatch ingest`` / ``quarantine``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl

#: format name -> Format class (the name must equal the class's ``name``)
FORMATS: dict[str, str] = {
    "canonical": "stormwatch.ingest.formats.canonical:CanonicalFormat",
    "openai_batch": "stormwatch.ingest.formats.openai_batch:OpenAIBatchFormat",
    "openai_http_log": "stormwatch.ingest.formats.openai_http:OpenAIHttpLogFormat",
    "litellm": "stormwatch.ingest.formats.litellm:LiteLLMFormat",
    "otlp": "stormwatch.ingest.formats.otlp:OtlpJsonFormat",
}


@hookimpl
def stormwatch_formats() -> Mapping[str, str]:
    return FORMATS


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "ingest": Command(
            "stormwatch.ingest.cli:ingest_command", "Load usage logs into the store, in any supported format."
        ),
        "quarantine": Command("stormwatch.ingest.cli:quarantine_group", "Inspect records that could not be loaded."),
        "export": Command(
            "stormwatch.ingest.parquet:export_command", "Export stored events as Parquet (partitioned by day)."
        ),
    }
