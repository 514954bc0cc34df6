"""Disruption's built-in plugin: the action sinks and the policy/enforce/actions/audit/cases commands."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl

#: ``--sink NAME`` -> ``f(*, webhook_url, secret_env, outbox, timeout) -> Sink``
SINKS: dict[str, str] = {
    "webhook": "stormwatch.disrupt.sinks:webhook_sink",
    "outbox": "stormwatch.disrupt.sinks:outbox_sink",
    "memory": "stormwatch.disrupt.sinks:memory_sink",
}


@hookimpl
def stormwatch_sinks() -> Mapping[str, str]:
    return SINKS


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "policy": Command("stormwatch.disrupt.cli:policy_group", "Validate, test and compare enforcement policies."),
        "enforce": Command(
            "stormwatch.disrupt.cli:enforce_command", "Decide (dry-run/shadow) or carry out policy actions."
        ),
        "actions": Command("stormwatch.disrupt.cli:actions_group", "List, deliver and retry enforcement actions."),
        "audit": Command("stormwatch.disrupt.cli:audit_group", "List and verify the hash-chained audit log."),
        "cases": Command(
            "stormwatch.disrupt.cli_cases:cases_group", "Review cases: assign, note, attach, label, close."
        ),
        "appeals": Command(
            "stormwatch.disrupt.cli_cases:appeals_group", "File and decide appeals; reinstate accounts."
        ),
        "labels": Command("stormwatch.disrupt.cli_cases:labels_group", "Export analysts' labels as training data."),
    }
