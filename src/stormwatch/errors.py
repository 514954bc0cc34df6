"""One error hierarchy and one exit-code table for the whole of stormwatch.

::

    StormwatchError                      exit 1   anything we raise on purpose
    ├── ConfigError                      exit 3   bad settings, bad --db URL, missing extra
    ├── InputError (ValueError)          exit 4   a file or argument we cannot use at all
    │   └── RecordError                  (never exits: quarantined, carries file:line + field)
    └── StoreError                       exit 5   the database refused or is unreachable

Exit codes the CLI uses besides those above:

* 0  - success
* 2  - usage error (wrong flags; click's own code)
* 10 - finished, but some records were quarantined or rejected (see ``stormwatch quarantine list``)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INPUT = 4
EXIT_STORE = 5
EXIT_QUARANTINED = 10


class StormwatchError(Exception):
    """Base class of every error stormwatch raises on purpose."""

    exit_code = EXIT_ERROR
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(StormwatchError):
    exit_code = EXIT_CONFIG


class InputError(StormwatchError, ValueError):
    exit_code = EXIT_INPUT


class StoreError(StormwatchError):
    exit_code = EXIT_STORE


class RecordError(InputError):
    """One bad record. Ingest quarantines it with its location; it never stops a run."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason
