"""The twin's two clocks: paced to real time (hardware-in-the-loop with ROS 2) or as fast as
possible (evaluation). The episode loop calls ``wait_until(sim_time)`` after each control step.

Pacing uses absolute deadlines (wall start + simulated time), never a sleep after the work, so
errors do not accumulate; a step that finishes after its deadline is counted as an overrun.
"""

from __future__ import annotations

import time


class FastClock:
    """No waiting: simulated time runs as fast as the computer allows."""

    overruns = 0

    def start(self, sim_time: float) -> None:
        pass

    def wait_until(self, sim_time: float) -> None:
        pass


class RealTimeClock:
    """Simulated time follows wall time (``time.monotonic``) from :meth:`start` on."""

    def __init__(self, tolerance_s: float = 0.001):
        self.tolerance_s = tolerance_s  # lateness beyond this counts as an overrun
        self.overruns = 0
        self.worst_lateness_s = 0.0
        self._wall0 = None
        self._sim0 = 0.0

    def start(self, sim_time: float) -> None:
        self._wall0 = time.monotonic()
        self._sim0 = sim_time

    def wait_until(self, sim_time: float) -> None:
        """Sleep until the wall clock reaches the deadline of ``sim_time``."""
        if self._wall0 is None:
            self.start(sim_time)
            return
        deadline = self._wall0 + (sim_time - self._sim0)
        lateness = time.monotonic() - deadline
        if lateness > self.tolerance_s:
            self.overruns += 1
            self.worst_lateness_s = max(self.worst_lateness_s, lateness)
            return
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(remaining)
