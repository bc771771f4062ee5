"""Wonik Allegro Hand V4 over CAN (python-can): the driver, its configuration and an emulator.

- :mod:`~handover.drivers.allegro.config`: :class:`AllegroConfig` (interface, channel, device id,
  hand side, PD gains and PWM limits per joint, loop period, timeouts, temperature limit).
- :mod:`~handover.drivers.allegro.driver`: :class:`AllegroHand`, the joint group (start-up, PC-side
  PD loop at 333 Hz in its own thread, status bits to FAULT, shut-down).
- :mod:`~handover.drivers.allegro.emulator`: :class:`AllegroEmulator`, the hand's firmware on a
  python-can bus moving a joint backend (the twin, or :class:`IdealJoints`), with fault injection.
- :mod:`~handover.drivers.allegro.protocol`: identifiers, frame layouts, units, status bits.
- :mod:`~handover.drivers.allegro.benchmark`: PD-loop jitter, latency and CPU share.
"""

from handover.drivers.allegro.config import AllegroConfig, AllegroConfigError
from handover.drivers.allegro.driver import AllegroFault, AllegroHand, AllegroStats
from handover.drivers.allegro.emulator import (
    AllegroEmulator,
    EmulatedHand,
    IdealJoints,
    LockedBackend,
    MotorModel,
    allegro_joint_index,
)

__all__ = ["AllegroConfig", "AllegroConfigError", "AllegroEmulator", "AllegroFault", "AllegroHand", "AllegroStats",
           "EmulatedHand", "IdealJoints", "LockedBackend", "MotorModel", "allegro_joint_index"]
