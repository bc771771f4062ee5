"""Mirroring backends for fast tests (like ros2_control's mock system): commands become states.

Units: positions rad, velocities rad/s, efforts N*m, object positions m (world frame), time s
(the caller's clock, passed in as ``now``).

Time going backwards: a mirror keeps its own clock, the largest ``now`` it has been given. A
``read``/``command`` with an earlier ``now`` is not an error (a hardware device could not tell
either) but is treated as happening at that latest time, so stamps never decrease; such a
stamp can then be later than the ``now`` passed in. With a non-decreasing ``now`` (the normal
case) every stamp is ``<= now``.

Fault injection: :meth:`~handover.drivers.device.Device.fail_next`, like every device.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Optional

import numpy as np

from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState
from handover.drivers.object_tracker import ObjectObservation, ObjectTracker


def _frozen(values: np.ndarray) -> np.ndarray:
    """A read-only float64 copy: a state handed out twice must not be changed by its first reader."""
    out = np.array(values, dtype=np.float64)
    out.setflags(write=False)
    return out


class _MirrorMixin:
    """What both mirrors share: the never-decreasing device clock."""

    name: str
    _latest_now: float = -np.inf

    def _io(self, now: float) -> float:
        """Start one read or command at ``now`` (s): return the device time, ``max`` of every
        ``now`` seen so far."""
        now = float(now)
        if not np.isfinite(now):
            raise ValueError(f"{self.name}: time is not finite: {now}")
        self._latest_now = max(self._latest_now, now)
        return self._latest_now


class MirrorJointGroup(_MirrorMixin, JointGroup):
    """A joint group whose measured positions are its commanded targets, ``lag_s`` later.

    - Position at device time ``t``: the newest command issued at or before ``t - lag_s``; before
      any command has been applied, ``initial``. (A stop holds like any other command, so it also
      takes ``lag_s`` to apply, after commands already sent.)
    - ``stamp``: the time of the measurement, i.e. the device time of the read (``<= now``). The
      mirror measures at every read; staleness only appears with ``drop_feedback``.
    - Velocity (if ``provide_velocity``): finite difference of the positions of this and the
      previous measurement (rad/s); zeros for the first one. Effort (if ``provide_effort``): zeros.
      What is not provided is ``None``, and :attr:`info` says so (its ``provides_velocity`` and
      ``provides_effort`` are replaced by the two flags given here).
    - Two reads at the same device time return the same measurement.
    - ``drop_feedback`` (settable at any time): reads return the last measurement taken before
      feedback was dropped, stamp included; commands keep working. If nothing was ever measured,
      reads return ``initial`` stamped ``-inf`` (no measurement yet).
    - The physical state survives ``close()``: a reconnected mirror is where it was left.
    - What it mirrors is what passed the command gate of :class:`JointGroup` (clamped, each
      command's change limited to ``velocity_limit x control_period_s`` of :attr:`info`, holds of a
      stale stream): a test that wants raw jumps gives the mirror an ``info`` with large velocity
      limits and stale periods.
    """

    def __init__(
        self,
        info: JointGroupInfo,
        name: str,
        initial: np.ndarray,
        lag_s: float = 0.0,
        drop_feedback: bool = False,
        provide_velocity: bool = True,
        provide_effort: bool = False,
    ):
        info = dataclasses.replace(info, provides_velocity=provide_velocity, provides_effort=provide_effort)
        super().__init__(info, name)
        initial = np.asarray(initial, dtype=np.float64).reshape(-1)
        if initial.shape != (info.size,) or not np.isfinite(initial).all():
            raise ValueError(f"{name}: initial position needs {info.size} finite values (rad), got {initial}")
        if not (np.isfinite(lag_s) and lag_s >= 0.0):
            raise ValueError(f"{name}: lag_s must be a finite number >= 0 (s), got {lag_s}")
        self.lag_s = float(lag_s)
        self.drop_feedback = drop_feedback
        self._initial = _frozen(initial)
        self._applied = self._initial  # position after the newest applied command, rad
        self._pending: collections.deque[tuple[float, np.ndarray]] = collections.deque()  # (issued at s, targets rad)
        self._last_measured: Optional[JointState] = None

    def _position_at(self, t: float) -> np.ndarray:
        """Apply every command issued at or before ``t - lag_s`` (``t`` never decreases)."""
        horizon = t - self.lag_s
        while self._pending and self._pending[0][0] <= horizon:
            _, self._applied = self._pending.popleft()
        return self._applied

    def _on_read(self, now: float) -> JointState:
        t = self._io(now)
        last = self._last_measured
        if self.drop_feedback:
            return last if last is not None else self._measurement(-np.inf, self._initial, None)
        if last is not None and last.stamp == t:
            return last
        self._last_measured = self._measurement(t, self._position_at(t), last)
        return self._last_measured

    def _measurement(self, stamp: float, position: np.ndarray, previous: Optional[JointState]) -> JointState:
        """A state as this mirror reports it (optional data only as :attr:`info` promises)."""
        velocity = effort = None
        if self.info.provides_velocity:
            if previous is None or not np.isfinite(previous.stamp):
                velocity = np.zeros(self.info.size)
            else:
                velocity = (position - previous.position) / (stamp - previous.stamp)
            velocity = _frozen(velocity)
        if self.info.provides_effort:
            effort = _frozen(np.zeros(self.info.size))
        return JointState(stamp=stamp, position=position, velocity=velocity, effort=effort)

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        self._pending.append((self._io(now), _frozen(targets)))


class MirrorObjectTracker(_MirrorMixin, ObjectTracker):
    """An object tracker that reports a given trajectory, ``latency_s`` late.

    ``trajectory(t)`` is the object centre at capture time ``t`` (s): a (3,) world-frame position
    (m), or ``None`` when the object is not visible then. A read at device time ``now`` returns the
    observation captured at ``now - latency_s``, stamped with that capture time; frames are not
    quantised (a capture at every read). A trajectory returning a wrong shape or non-finite values
    makes the read fail (FAULT).
    """

    def __init__(self, trajectory: Callable[[float], Optional[np.ndarray]], name: str, latency_s: float = 0.0):
        super().__init__(name)
        if not (np.isfinite(latency_s) and latency_s >= 0.0):
            raise ValueError(f"{name}: latency_s must be a finite number >= 0 (s), got {latency_s}")
        self.trajectory = trajectory
        self.latency_s = float(latency_s)

    def _on_read(self, now: float) -> ObjectObservation:
        captured = self._io(now) - self.latency_s
        position = self.trajectory(captured)
        if position is None:
            return ObjectObservation(stamp=captured, valid=False)
        position = _frozen(position)
        if position.shape != (3,) or not np.isfinite(position).all():
            raise ValueError(f"{self.name}: trajectory({captured}) must be None or 3 finite values (m), got {position}")
        return ObjectObservation(stamp=captured, valid=True, position=position)
