"""The joint-group device interface: one arm or one hand, hardware or twin or mirror.

Units: positions rad, velocities rad/s, efforts N*m, time s (the caller's clock: monotonic time on
hardware, simulation time in the twin). Joint order is the group's ``names`` (contract order);
callers reconcile orders by name, never by position (:meth:`JointGroup.command_by_name`).

Rates it is designed for: the Allegro hand's PD loop runs on the PC at ~333 Hz and is fed targets at
the control rate; the xArm takes streamed servo targets at 100-250 Hz. ``command`` therefore only
stores the newest target; a backend forwards it at its own rate.

Every command passes the command gate (:mod:`handover.runtime.command_gate`) here, in the base
class, so every backend gets the same rules: non-finite targets, wrong lengths and (by name)
duplicate, unknown or missing joints are refused (``ValueError``; the device does not fault, and a
group that was following commands holds its measured position); targets are clamped to the joint
limits; each command changes a target by at most ``velocity_limit x control_period`` from the
reference (the last target sent, or the held position); and a followed stream that pauses for more
than ``stale_periods`` control periods makes the group hold (:meth:`JointGroup.poll`, or the next
command). ``command`` returns the targets really sent; :attr:`JointGroup.last_gate` says what the gate
did. ``hold`` and ``stop`` target the measured position as it is, even where it lies outside the
limits (the contract's default hand pose does), so that stopping never moves a joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from handover.drivers.device import Device, Lifecycle
from handover.runtime.command_gate import (
    GateDecision,
    GateLimits,
    GateState,
    gate_command,
    gate_poll,
    hold_state,
    staleness,
)

@dataclass(frozen=True)
class JointGroupInfo:
    """Static facts of a joint group. ``provides_velocity``/``provides_effort`` say which optional
    data the device really measures; what it does not measure is ``None`` in its states.
    ``velocity_limit`` (rad/s per joint), ``control_period_s`` (s, one command per period) and
    ``stale_periods`` configure the command gate (:meth:`gate_limits`)."""

    names: tuple[str, ...]
    lower: tuple[float, ...]  # rad
    upper: tuple[float, ...]  # rad
    provides_velocity: bool
    provides_effort: bool
    velocity_limit: tuple[float, ...]  # rad/s
    control_period_s: float  # s
    stale_periods: float  # control periods

    @property
    def size(self) -> int:
        return len(self.names)

    def gate_limits(self) -> GateLimits:
        """The command gate's limits (raises ``ValueError`` if these facts are inconsistent)."""
        return GateLimits.from_limits(self.names, self.lower, self.upper, self.velocity_limit,
                                      self.control_period_s, self.stale_periods)

    @staticmethod
    def from_config(group, provides_velocity: bool, provides_effort: bool, *, gate,
                    control_period_s: float) -> "JointGroupInfo":
        """From a :class:`~handover.runtime.cell_config.JointGroupConfig` (names, training limits,
        velocity limits), the cell's :class:`~handover.runtime.cell_config.GateConfig` (``gate=cfg.gate``)
        and control period (``control_period_s=cfg.control_period_s``, s)."""
        return JointGroupInfo(
            names=tuple(group.joints), lower=tuple(group.lower), upper=tuple(group.upper),
            provides_velocity=provides_velocity, provides_effort=provides_effort,
            velocity_limit=tuple(group.velocity_limit),
            control_period_s=float(control_period_s),
            stale_periods=float(gate.stale_periods),
        )


@dataclass(frozen=True)
class JointState:
    """One measurement. ``stamp`` is when it was measured (s, the caller's clock), not when read."""

    stamp: float
    position: np.ndarray  # (n,) rad
    velocity: Optional[np.ndarray] = None  # (n,) rad/s, None if not measured
    effort: Optional[np.ndarray] = None  # (n,) N*m, None if not measured


def _checked_now(name: str, now) -> float:
    now = float(now)
    if not math.isfinite(now):
        raise ValueError(f"{name}: time is not finite: {now}")
    return now


class JointGroup(Device):
    """Base class: lifecycle from :class:`Device`, the command gate here; backends implement
    ``_on_read(now) -> JointState`` and ``_on_command(targets, now)`` (targets already gated).

    Gate view: :attr:`gate_limits`, :attr:`gate_state` (``None`` after ``activate()``: holding, the
    reference being the measured position, read at the first command; the device holds by itself
    until then), :attr:`last_gate` (the last command's :class:`GateDecision`), :attr:`stale_holds`
    (holds because the stream went stale or the clock went back) and :attr:`last_hold_reason`."""

    def __init__(self, info: JointGroupInfo, name: str):
        super().__init__(name)
        self.info = info
        try:
            self.gate_limits = info.gate_limits()
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        self._gate: Optional[GateState] = None
        self.last_gate: Optional[GateDecision] = None
        self.stale_holds = 0
        self.last_hold_reason = ""

    @property
    def gate_state(self) -> Optional[GateState]:
        return self._gate

    def activate(self) -> None:
        """Accept commands from now on; the gate starts HOLDING at the measured position."""
        super().activate()
        self._gate = None
        self.last_hold_reason = "activated"

    def read(self, now: float) -> JointState:
        """The latest measurement at or before ``now`` (INACTIVE, ACTIVE or STOPPED)."""
        self._require({Lifecycle.INACTIVE, Lifecycle.ACTIVE, Lifecycle.STOPPED}, "read")
        return self._guarded(self._on_read, "read", now)

    def command(self, targets: np.ndarray, now: float) -> np.ndarray:
        """Send position targets (rad, the group's order) through the gate; returns the targets
        really sent (ACTIVE only). A refused command raises ``ValueError`` naming the device."""
        return self._command(targets, now, None)

    def command_by_name(self, names: Sequence[str], targets, now: float) -> np.ndarray:
        """Like :meth:`command`, ``targets[i]`` being for joint ``names[i]``: every joint of the group
        exactly once (duplicate, unknown or missing names are refused). Returns the targets really
        sent, in the group's order."""
        return self._command(targets, now, tuple(names))

    def poll(self, now: float) -> Optional[str]:
        """Rule (d), for a timer: if the followed stream went stale (or the clock went back), hold the
        measured position; returns why it held, else ``None``. Does nothing unless ACTIVE."""
        if self.state is not Lifecycle.ACTIVE or self._gate is None:
            return None
        now = _checked_now(self.name, now)
        if staleness(self.gate_limits, self._gate, now) is None:
            return None
        return self._guarded(self._poll, "poll", now)

    def hold(self, now: float) -> np.ndarray:
        """Command the current measured position and keep it (ACTIVE only); returns the target.
        The gate HOLDS there: the next command starts from it."""
        self._require({Lifecycle.ACTIVE}, "hold")
        return self._guarded(self._hold, "hold", _checked_now(self.name, now), "hold")

    def stop(self, now: float) -> None:
        """Hold the current position and refuse commands until reconnected. Idempotent.
        From INACTIVE (no commands accepted, the device holds by itself) it only latches."""
        if self.state is Lifecycle.STOPPED:
            return
        self._require({Lifecycle.INACTIVE, Lifecycle.ACTIVE}, "stop")
        if self.state is Lifecycle.ACTIVE:
            self._guarded(self._hold, "stop", _checked_now(self.name, now), "stop")
        self._guarded(self._on_stop, "stop", now)
        self._enter_stopped()

    # -- the gate ---------------------------------------------------------------------------------

    def _command(self, targets, now: float, names: Optional[tuple]) -> np.ndarray:
        self._require({Lifecycle.ACTIVE}, "command")
        now = _checked_now(self.name, now)
        if self._gate is None:  # first command since activate(): hold where the joints are
            self._gate = hold_state(self._guarded(self._measured, "command", now), now, "activated")
        elif staleness(self.gate_limits, self._gate, now) is not None:  # as a poll would have
            self._guarded(self._poll, "command", now)
        decision, state = gate_command(self.gate_limits, self._gate, targets, now, names)
        self.last_gate = decision
        if not decision.accepted:
            if decision.hold:
                self._guarded(self._hold, "command", now, f"refused a command: {decision.reason}")
            raise ValueError(f"{self.name}: {decision.reason}")
        self._guarded(self._on_command, "command", decision.targets, now)
        self._gate = state
        return np.array(decision.targets)

    def _measured(self, now: float) -> np.ndarray:
        position = np.asarray(self._on_read(now).position, dtype=np.float64)
        if position.shape != (self.info.size,) or not np.isfinite(position).all():
            raise ValueError(f"measured position is not {self.info.size} finite numbers: {position}")
        return position

    def _hold(self, now: float, why: str) -> np.ndarray:
        position = self._measured(now)
        self._on_command(position, now)
        self._gate = hold_state(position, now, why)
        self.last_hold_reason = why
        return position.copy()

    def _poll(self, now: float) -> Optional[str]:
        position = self._measured(now)
        held, state = gate_poll(self.gate_limits, self._gate, now, position)
        if not held:
            return None
        self._on_command(position, now)
        self._gate = state
        self.stale_holds += 1
        self.last_hold_reason = state.why
        return state.why

    # -- hooks for backends -----------------------------------------------------------------------

    def _on_read(self, now: float) -> JointState:
        raise NotImplementedError

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        raise NotImplementedError

    def _on_stop(self, now: float) -> None:
        """Anything beyond holding (e.g. servo hold mode on the xArm)."""
