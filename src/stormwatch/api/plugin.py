"""The API's built-in plugin: the route modules (installed in this order) and ``serve`` / ``token``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl

#: extension name -> ``install(app)``; ``taxii`` mounts intel's TAXII 2.1 server at /taxii2
API_EXTENSIONS: dict[str, str] = {
    "health": "stormwatch.api.routes.health:install",
    "tokens": "stormwatch.api.routes.tokens:install",
    "accounts": "stormwatch.api.routes.accounts:install",
    "events": "stormwatch.api.routes.events:install",
    "clusters": "stormwatch.api.routes.clusters:install",
    "cases": "stormwatch.api.routes.cases:install",
    "enforcement": "stormwatch.api.routes.enforcement:install",
    "appeals": "stormwatch.api.routes.appeals:install",
    "audit": "stormwatch.api.routes.audit:install",
    "moderations": "stormwatch.api.routes.moderations:install",
    "guardrail": "stormwatch.api.routes.guardrail:install",
    "otlp": "stormwatch.api.routes.otlp:install",
    "taxii": "stormwatch.api.taxii:install",
}


@hookimpl
def stormwatch_api_extensions() -> Mapping[str, str]:
    return API_EXTENSIONS


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "serve": Command("stormwatch.api.cli:serve_command", "Run the HTTP API (authenticated, loopback by default)."),
        "token": Command("stormwatch.api.cli:token_group", "Create, list and revoke API tokens."),
    }
