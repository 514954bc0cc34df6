"""Platform simulator: synthetic accounts, usage events, partner intel and ground truth.

See ``docs/simulator.md``. Entry point: :func:`simulate`.
"""

from stormwatch.simulate.core import GENERATOR_VERSION, SimSummary, simulate

__all__ = ["GENERATOR_VERSION", "SimSummary", "simulate"]
