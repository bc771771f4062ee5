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
    return read_joint_states(devices, now)[0]


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
    for dev in devices.joint_groups.values():  # the gate starts from where the joints are (after a reset)
        dev.hold(twin.time)
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


# ---------------------------------------------------------------------------------------------
# One episode of the deployed protocol (the ROS 2 policy node's), in lockstep with the twin


@dataclass
class ProtocolRecord:
    """One control period of :func:`run_protocol_episode`. Joint values in contract order."""

    tick: int  # 0.. from the start (tick 0 is the blend's first)
    phase: str  # the sequencer's phase this tick ran in (a Phase: "blend", "place", "warmup", "episode")
    step: Optional[int]  # policy step index 0..N-1 on a policy tick, else None
    time: float  # s, simulation time after the tick's control period
    joint_positions: np.ndarray  # (44,) rad, as read before the command
    targets: Optional[np.ndarray]  # (44,) rad, as sent (clamped); None if nothing was commanded
    observation: ObjectObservation
    object_position: np.ndarray  # (3,) true position after the period, m, world
    placed: bool = False  # place_object() was called this tick (after the command, before the period ran)
    done: bool = False  # the episode's last tick (the last targets held one more period)
    result: object = None  # the controller's last_result of a policy step (e.g. a StepResult), else None
    efforts: Optional[np.ndarray] = None  # (44,) N*m as given to the sequencer (read_efforts), else None


def read_joint_states(devices: TwinDevices, now: float, efforts: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The 44 joint positions (rad) and, with ``efforts``, the 44 measured efforts (N*m), contract
    order, from one read of each of the four groups (so both come from the same measurement).
    Raises ValueError if efforts are asked for and a group does not measure them."""
    states = [(devices.joint_groups[g], devices.joint_groups[g].read(now)) for g in GROUPS]
    q = np.concatenate([js.position for _, js in states])
    if not efforts:
        return q, None
    for dev, js in states:
        if js.effort is None:
            raise ValueError(f"{dev.name}: the joint group does not measure efforts")
    return q, np.concatenate([np.asarray(js.effort, dtype=float) for _, js in states])


def run_protocol_episode(
    devices: TwinDevices,
    sequencer,
    place_object: Callable[[], tuple[bool, str]],
    clock=None,
    on_tick: Optional[Callable[[ProtocolRecord], None]] = None,
    read_efforts: bool = False,
) -> list[ProtocolRecord]:
    """One whole episode of the deployed protocol, from the twin's current state: blend to the reset
    pose, place the object, settle, dry step, the policy steps, one period holding the last targets
    (:class:`~handover.runtime.episode_sequencer.EpisodeSequencer`, idle, with its controllers; the
    node runs the same one). Devices must be ACTIVE; each joint group first holds its measured
    position (its command gate starts there). Returns one record per control period, the last one
    ``done``.

    Each tick, at ``now = twin.time``: read the four joint groups and the tracker (and, with
    ``read_efforts``, the 44 efforts), tick the sequencer, send its targets, call ``place_object()``
    (no arguments; places the object in the twin, returns ``(ok, why)``) when it asks for the
    placement (once) and hand it the answer, then step the twin one control period and
    ``clock.wait_until(twin.time)`` (:class:`~handover.sim_twin.clock.FastClock` by default).

    The sequencer's time is the tick's deadline ``t0 + k * period`` (``t0``: the twin's time at the
    start), as the node's paced loop gives it, so phases last the same number of ticks as in the
    node; the twin's own time sums physics steps and drifts from it by float rounding.

    Raises ValueError if the sequencer's period is not the twin's control period, RuntimeError if the
    sequencer refuses the start or the episode is aborted (a failed placement: the fault says why).
    """
    from handover.runtime.episode_sequencer import Phase

    twin = devices.twin
    period = sequencer.period_s
    if abs(period - twin.cfg.control_period_s) > 1e-9:
        raise ValueError(f"run_protocol_episode: the sequencer's period {period:g} s is not the twin's control period "
                         f"{twin.cfg.control_period_s:g} s")
    clock = clock or FastClock()
    t0 = twin.time
    for dev in devices.joint_groups.values():  # the gate starts from where the joints are (as run_episode)
        dev.hold(t0)
    ok, why = sequencer.start(t0, read_joint_positions(devices, t0))
    if not ok:
        raise RuntimeError(f"run_protocol_episode: the sequencer did not start: {why}")
    clock.start(twin.time)
    records: list[ProtocolRecord] = []
    k = 0
    while True:
        now = twin.time
        q, efforts = read_joint_states(devices, now, read_efforts)
        obs = devices.tracker.read(now)
        out = sequencer.tick(t0 + k * period, q, obs, efforts)
        sent = None if out.targets is None else send_targets(devices, out.targets, now)
        if out.request_place:
            placed_ok, placed_why = place_object()
            sequencer.placed(bool(placed_ok), placed_why)
        if sequencer.phase is Phase.FAULT:
            raise RuntimeError(f"run_protocol_episode: episode aborted at tick {k}: {sequencer.fault}")
        if not out.done and not sequencer.active:
            raise RuntimeError(f"run_protocol_episode: the episode ended at tick {k} without done "
                               f"(phase {sequencer.phase.value})")
        twin.step()
        clock.wait_until(twin.time)
        rec = ProtocolRecord(k, out.phase, out.step, twin.time, q, sent, obs, twin.object_position(),
                             placed=out.request_place, done=out.done, result=out.result, efforts=efforts)
        records.append(rec)
        if on_tick is not None:
            on_tick(rec)
        if out.done:
            return records
        k += 1
