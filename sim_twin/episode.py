"""Episodes in the twin, driven through the device interfaces like the real cell.

A controller turns what the devices report (44 joint positions in contract order, rad; the latest
object observation) into 44 joint targets (rad) once per control step. Both the reference expert
and the ONNX policy plug in here; so does the trivial :class:`HoldPose`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np

from handover.drivers.object_tracker import ObjectObservation
from handover.sim_twin.clock import FastClock
from handover.sim_twin.devices import GROUPS, TwinDevices


class Controller(Protocol):
    def reset(self) -> np.ndarray:
        """Episode start; returns the 44 targets to hold before the first step."""
        ...

    def targets(self, t: float, joint_positions: np.ndarray, obs: ObjectObservation) -> np.ndarray:
        """44 joint targets (rad) for this control step."""
        ...


class HoldPose:
    """Hold the reset pose (the targets the twin resets to)."""

    def __init__(self, targets: np.ndarray):
        self._targets = np.asarray(targets, dtype=float)

    def reset(self) -> np.ndarray:
        return self._targets.copy()

    def targets(self, t, joint_positions, obs) -> np.ndarray:
        return self._targets.copy()


@dataclass
class StepRecord:
    step: int
    time: float  # s, simulation time after the step
    joint_positions: np.ndarray  # (44,) rad, as read before the command
    targets: np.ndarray  # (44,) rad, as sent (clamped)
    observation: ObjectObservation
    object_position: np.ndarray  # (3,) true position after the step, m


def read_joint_positions(devices: TwinDevices, now: float) -> np.ndarray:
    """The 44 joint positions in contract order, from the four joint groups."""
    return np.concatenate([devices.joint_groups[g].read(now).position for g in GROUPS])


def send_targets(devices: TwinDevices, targets: np.ndarray, now: float) -> np.ndarray:
    """Split 44 targets over the four joint groups; returns what was really sent."""
    sent, i = [], 0
    for g in GROUPS:
        dev = devices.joint_groups[g]
        sent.append(dev.command(targets[i:i + dev.info.size], now))
        i += dev.info.size
    return np.concatenate(sent)


def run_episode(
    devices: TwinDevices,
    controller: Controller,
    steps: int,
    on_step: Optional[Callable[[StepRecord], None]] = None,
    clock=None,
) -> list[StepRecord]:
    """Run ``steps`` control steps from the twin's current (reset) state. Devices must be ACTIVE.
    ``clock``: :class:`~handover.sim_twin.clock.FastClock` (default) or ``RealTimeClock``."""
    twin = devices.twin
    clock = clock or FastClock()
    send_targets(devices, controller.reset(), twin.time)
    clock.start(twin.time)
    records = []
    for k in range(steps):
        now = twin.time
        q = read_joint_positions(devices, now)
        obs = devices.tracker.read(now)
        sent = send_targets(devices, controller.targets(now, q, obs), now)
        twin.step()
        clock.wait_until(twin.time)
        rec = StepRecord(k, twin.time, q, sent, obs, twin.object_position())
        records.append(rec)
        if on_step is not None:
            on_step(rec)
    return records
