"""The joint-group device interface: one arm or one hand, hardware or twin or mirror.

Units: positions rad, velocities rad/s, efforts N*m, time s (the caller's clock: monotonic time on
hardware, simulation time in the twin). Joint order is the group's ``names`` (contract order);
callers reconcile orders by name, never by position.

Rates it is designed for: the Allegro hand's PD loop runs on the PC at ~333 Hz and is fed 60 Hz
targets; the xArm takes streamed servo targets at 100-250 Hz. ``command`` therefore only stores
the newest target; a backend forwards it at its own rate.

Commands outside the joint limits are **clamped** to the limits; ``command`` returns the targets
really sent. Commands that are not finite or have the wrong length are refused (``ValueError``)
and change nothing. ``hold`` and ``stop`` target the measured position as it is, even where it
lies outside the limits (the contract's default hand pose does), so that stopping never moves a joint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from handover.drivers.device import Device, Lifecycle


@dataclass(frozen=True)
class JointGroupInfo:
    """Static facts of a joint group. ``provides_velocity``/``provides_effort`` say which optional
    data the device really measures; what it does not measure is ``None`` in its states."""

    names: tuple[str, ...]
    lower: tuple[float, ...]  # rad
    upper: tuple[float, ...]  # rad
    provides_velocity: bool
    provides_effort: bool

    @property
    def size(self) -> int:
        return len(self.names)

    @staticmethod
    def from_config(group, provides_velocity: bool, provides_effort: bool) -> "JointGroupInfo":
        """From a :class:`~handover.runtime.cell_config.JointGroupConfig` (names and training limits)."""
        return JointGroupInfo(tuple(group.joints), tuple(group.lower), tuple(group.upper), provides_velocity, provides_effort)


@dataclass(frozen=True)
class JointState:
    """One measurement. ``stamp`` is when it was measured (s, the caller's clock), not when read."""

    stamp: float
    position: np.ndarray  # (n,) rad
    velocity: Optional[np.ndarray] = None  # (n,) rad/s, None if not measured
    effort: Optional[np.ndarray] = None  # (n,) N*m, None if not measured


class JointGroup(Device):
    """Base class: lifecycle from :class:`Device`, target checking and clamping here; backends
    implement ``_on_read(now) -> JointState`` and ``_on_command(targets, now)``."""

    def __init__(self, info: JointGroupInfo, name: str):
        super().__init__(name)
        self.info = info
        self._lower = np.asarray(info.lower, dtype=np.float64)
        self._upper = np.asarray(info.upper, dtype=np.float64)

    def read(self, now: float) -> JointState:
        """The latest measurement at or before ``now`` (INACTIVE, ACTIVE or STOPPED)."""
        self._require({Lifecycle.INACTIVE, Lifecycle.ACTIVE, Lifecycle.STOPPED}, "read")
        return self._guarded(self._on_read, "read", now)

    def clamp(self, targets: np.ndarray) -> np.ndarray:
        """Check ``targets`` (n finite numbers, rad) and clamp them to the joint limits."""
        t = np.asarray(targets, dtype=np.float64).reshape(-1)
        if t.shape != (self.info.size,):
            raise ValueError(f"{self.name}: command needs {self.info.size} targets, got {t.shape[0]}")
        if not np.isfinite(t).all():
            bad = int(np.flatnonzero(~np.isfinite(t))[0])
            raise ValueError(f"{self.name}: command target {bad} ({self.info.names[bad]}) is not finite: {t[bad]}")
        return np.clip(t, self._lower, self._upper)

    def command(self, targets: np.ndarray, now: float) -> np.ndarray:
        """Send position targets (rad); returns the clamped targets really sent (ACTIVE only)."""
        self._require({Lifecycle.ACTIVE}, "command")
        sent = self.clamp(targets)
        self._guarded(self._on_command, "command", sent, now)
        return sent

    def hold(self, now: float) -> np.ndarray:
        """Command the current measured position and keep it (ACTIVE only); returns the target."""
        self._require({Lifecycle.ACTIVE}, "hold")
        return self._guarded(self._hold, "hold", now)

    def _hold(self, now: float) -> np.ndarray:
        position = np.asarray(self._on_read(now).position, dtype=np.float64)
        if position.shape != (self.info.size,) or not np.isfinite(position).all():
            raise ValueError(f"measured position is not {self.info.size} finite numbers: {position}")
        self._on_command(position, now)
        return position

    def stop(self, now: float) -> None:
        """Hold the current position and refuse commands until reconnected. Idempotent.
        From INACTIVE (no commands accepted, the device holds by itself) it only latches."""
        if self.state is Lifecycle.STOPPED:
            return
        self._require({Lifecycle.INACTIVE, Lifecycle.ACTIVE}, "stop")
        if self.state is Lifecycle.ACTIVE:
            self._guarded(self._hold, "stop", now)
        self._guarded(self._on_stop, "stop", now)
        self.state = Lifecycle.STOPPED

    # -- hooks for backends -----------------------------------------------------------------------

    def _on_read(self, now: float) -> JointState:
        raise NotImplementedError

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        raise NotImplementedError

    def _on_stop(self, now: float) -> None:
        """Anything beyond holding (e.g. servo hold mode on the xArm)."""
