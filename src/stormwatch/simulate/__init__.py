"""Platform simulator: synthetic accounts, usage events, partner intel and ground truth.

See ``docs/simulator.md``. Entry point: :func:`simulate`; generator knobs: :class:`SimSettings`.
The names are imported on first use, so that the built-in plugin ``stormwatch.simulate.plugin``
is cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stormwatch.simulate.core import GENERATOR_VERSION, SimSummary, simulate
    from stormwatch.simulate.settings import SimSettings

__all__ = ["GENERATOR_VERSION", "SimSettings", "SimSummary", "simulate"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from stormwatch.simulate import core

    value = getattr(core, name)
    globals()[name] = value
    return value
