"""Joint backends an emulated controller can run on (its physics), without importing the twin.

A joint backend is any object with (duck-typed, as :class:`handover.sim_twin.devices.SimBackend`):

- ``time``: its clock (s);
- ``read_joints(index) -> JointState``: positions (rad), velocities (rad/s), efforts (N*m or None)
  of the joints ``index``;
- ``set_targets(index, targets)``: position targets (rad) of those joints.

The MuJoCo twin (``handover.sim_twin.twin.Twin``) is one: its joints are the cell's 44 contract
joints and its time advances only when stepped, so wrap it in :class:`LockedBackend` (several
emulators and a stepper share it across threads) and keep it in step with the wall clock with
:class:`RealTimeStepper`. :class:`RateLimitedJoints` is a self-contained one for tests and for
running an emulator on its own.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

import numpy as np

from handover.drivers.joint_group import JointState


class JointBackend(Protocol):
    @property
    def time(self) -> float: ...

    def read_joints(self, index: np.ndarray) -> JointState: ...

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None: ...


class RateLimitedJoints:
    """Joints that move straight to their targets at ``max_velocity`` (rad/s), as the xArm's servo
    mode does (full speed to the newest target); no dynamics, effort 0. Its ``time`` is
    ``clock()`` (default ``time.monotonic``); positions are integrated when read, so it needs no
    stepping. Thread-safe."""

    def __init__(self, initial, max_velocity: float = 3.14, clock: Callable[[], float] = time.monotonic):
        if not max_velocity > 0:
            raise ValueError(f"max_velocity must be > 0 rad/s, got {max_velocity}")
        self._pos = np.asarray(initial, dtype=np.float64).copy()
        self._target = self._pos.copy()
        self._vel = np.zeros_like(self._pos)
        self.max_velocity = float(max_velocity)
        self._clock = clock
        self._t = clock()
        self._lock = threading.Lock()

    @property
    def time(self) -> float:
        return self._clock()

    def _integrate(self) -> float:
        now = self._clock()
        dt = max(0.0, now - self._t)
        self._t = now
        error = self._target - self._pos
        step = np.clip(error, -self.max_velocity * dt, self.max_velocity * dt)
        self._pos += step
        self._vel = step / dt if dt > 0 else np.zeros_like(self._pos)
        return now

    def read_joints(self, index) -> JointState:
        with self._lock:
            now = self._integrate()
            index = np.asarray(index)
            return JointState(stamp=now, position=self._pos[index].copy(), velocity=self._vel[index].copy(),
                              effort=np.zeros(len(index)))

    def set_targets(self, index, targets) -> None:
        with self._lock:
            self._integrate()
            self._target[np.asarray(index)] = np.asarray(targets, dtype=np.float64)


class LockedBackend:
    """A backend shared across threads: every call holds one lock. ``advance(dt)`` is passed on
    when the wrapped backend has it (the twin)."""

    def __init__(self, backend):
        self.backend = backend
        self.lock = threading.RLock()

    @property
    def time(self) -> float:
        with self.lock:
            return float(self.backend.time)

    def read_joints(self, index) -> JointState:
        with self.lock:
            return self.backend.read_joints(index)

    def set_targets(self, index, targets) -> None:
        with self.lock:
            self.backend.set_targets(index, targets)

    def advance(self, dt: float) -> float:
        with self.lock:
            return float(self.backend.advance(dt))


class RealTimeStepper:
    """Keeps a steppable backend's ``time`` in step with the wall clock (``time.monotonic``), from
    its own thread: every ``period_s`` it advances the backend by the wall time that passed
    (``advance(dt)``, e.g. the twin's whole physics steps). ``start()`` / ``close()``."""

    def __init__(self, backend: LockedBackend, period_s: float = 0.005):
        self.backend = backend
        self.period_s = float(period_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="real-time stepper", daemon=True)
        self.lag_s = 0.0  # how far the backend was behind the wall clock at the last tick

    def start(self) -> "RealTimeStepper":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> "RealTimeStepper":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        wall0, sim0 = time.monotonic(), self.backend.time
        while not self._stop.wait(self.period_s):
            behind = (time.monotonic() - wall0) - (self.backend.time - sim0)
            self.lag_s = behind
            if behind > 0:
                self.backend.advance(behind)
