"""The one place the control loop is paced: absolute deadlines ``t0 + k * period``, no sleep after work.

A tick that starts late by more than ``tolerance_s`` counts as an overrun; if whole periods were
missed, their deadlines are skipped (the loop never tries to catch up by running ticks back to back).
Times are seconds on the given clock: ``time.monotonic`` for wall time, or a ROS clock under
``use_sim_time`` (see :class:`RosClock`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np


class LoopClock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, t: float, stop: threading.Event) -> None: ...


def _sleep_towards(remaining: float, stop: threading.Event) -> None:
    """One step of a precise sleep: a coarse wait that stops 2 ms short, then short sleeps."""
    if remaining > 0.003:
        stop.wait(min(remaining - 0.002, 0.05))
    else:
        time.sleep(min(remaining, 0.0005))


class WallClock:
    """``time.monotonic`` seconds."""

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float, stop: threading.Event) -> None:
        while not stop.is_set() and (remaining := t - time.monotonic()) > 0:
            _sleep_towards(remaining, stop)


class RosClock:
    """A node's ROS clock (follows ``/clock`` under ``use_sim_time``), in seconds."""

    TOLERANCE_S = 1e-6  # a deadline counts as reached this close before it

    def __init__(self, clock, poll_s: float = 0.0005):
        self.clock = clock
        self.poll_s = poll_s

    def now(self) -> float:
        return self.clock.now().nanoseconds * 1e-9

    def sleep_until(self, t: float, stop: threading.Event) -> None:
        # Under /clock the time moves in whole nanoseconds while deadlines are float sums
        # t0 + k * period: a deadline 0.3 ns "in the future" must not cost a whole /clock period
        # (and then two ticks on one simulation step), so it counts as reached 1 us early.
        sim = getattr(self.clock, "ros_time_is_active", False)  # /clock drives it: poll
        t -= self.TOLERANCE_S
        while not stop.is_set() and (remaining := t - self.now()) > 0:
            stop.wait(self.poll_s) if sim else _sleep_towards(remaining, stop)


@dataclass
class LoopStats:
    """Wake-up times of every tick (clock seconds) and the overruns."""

    period_s: float
    wakeups: list = field(default_factory=list)
    overruns: int = 0
    skipped: int = 0  # deadlines skipped after an overrun of whole periods

    def jitter_s(self) -> np.ndarray:
        """Deviation of each interval between wake-ups from the period (s)."""
        w = np.asarray(self.wakeups)
        return np.abs(np.diff(w) - self.period_s) if len(w) > 1 else np.zeros(0)


class PacedLoop:
    """Call ``tick(k, deadline)`` at ``t0 + k * period`` until :meth:`stop` (or ``tick`` returns False)."""

    def __init__(self, period_s: float, clock: Optional[LoopClock] = None, tolerance_s: float = 0.001):
        if not period_s > 0:
            raise ValueError(f"PacedLoop: period must be > 0 s, got {period_s}")
        self.period_s = period_s
        self.clock = clock or WallClock()
        self.tolerance_s = tolerance_s
        self.stats = LoopStats(period_s)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def run(self, tick: Callable[[int, float], Optional[bool]]) -> None:
        """Run in the calling thread."""
        t0 = self.clock.now()
        k = 0
        while not self._stop.is_set():
            deadline = t0 + k * self.period_s
            self.clock.sleep_until(deadline, self._stop)
            if self._stop.is_set():
                break
            now = self.clock.now()
            self.stats.wakeups.append(now)
            late = now - deadline
            if late > self.tolerance_s:
                self.stats.overruns += 1
            if tick(k, deadline) is False:
                break
            k += 1
            # whole periods already missed are skipped, never run back to back
            behind = math.floor((self.clock.now() - (t0 + k * self.period_s)) / self.period_s)
            if behind > 0:
                self.stats.skipped += behind
                k += behind

    def start(self, tick: Callable[[int, float], Optional[bool]], name: str = "paced-loop") -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, args=(tick,), name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
