"""A Twilio Messages API simulator (`python -m bulksms_tools.simulator`).

The Twilio target of the demo, the tests and the benchmark.

See docs/simulator.md for its flags, magic numbers and control endpoints.
"""

from bulksms_tools.simulator.magic_numbers import MAGIC_NUMBERS, MagicKind, MagicNumber
from bulksms_tools.simulator.server import SimulatorConfig, create_app

__all__ = ["MAGIC_NUMBERS", "MagicKind", "MagicNumber", "SimulatorConfig", "create_app"]
