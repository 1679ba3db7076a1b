"""A Twilio Messages API simulator (`python -m shared.simulator`).

The Twilio target of the demo, the tests and the benchmark.

See docs/simulator.md for its flags, magic numbers and control endpoints.
"""

from shared.simulator.magic_numbers import MAGIC_NUMBERS, MagicKind, MagicNumber
from shared.simulator.server import SimulatorConfig, create_app

__all__ = ["MAGIC_NUMBERS", "MagicKind", "MagicNumber", "SimulatorConfig", "create_app"]
