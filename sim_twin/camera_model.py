"""How the twin imitates the D435 object-tracking pipeline: frames at a fixed rate, each a noisy
capture of the true object position, arriving ``latency_s`` after capture, sometimes without a
detection (dropout). Times in s (simulation time), positions in m (world frame).
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np

from handover.drivers.object_tracker import ObjectObservation
from handover.runtime.cell_config import TrackerModelConfig


class CameraModel:
    def __init__(self, cfg: TrackerModelConfig, seed: int = 0, history: int = 256):
        self.cfg = cfg
        self.period = 1.0 / cfg.rate_hz
        self.rng = np.random.default_rng(seed)
        self.frames: deque[ObjectObservation] = deque(maxlen=history)  # by capture time
        self._next_capture = 0.0

    def reset(self, time: float) -> None:
        """Forget all frames; the next frame is captured at ``time``."""
        self.frames.clear()
        self._next_capture = time

    def observe(self, time: float, true_position: np.ndarray) -> None:
        """Called after every physics step: captures a frame when a frame time has been reached.
        The capture is stamped with the frame time (within one physics step of it)."""
        while time + 1e-12 >= self._next_capture:
            stamp = self._next_capture
            self._next_capture += self.period
            if self.cfg.dropout and self.rng.random() < self.cfg.dropout:
                self.frames.append(ObjectObservation(stamp=stamp, valid=False))
                continue
            noise = self.rng.normal(0.0, self.cfg.noise_std, 3) if self.cfg.noise_std else 0.0
            self.frames.append(ObjectObservation(stamp=stamp, valid=True, position=np.asarray(true_position, float) + noise))

    def latest(self, now: float) -> Optional[ObjectObservation]:
        """The newest frame that has arrived by ``now`` (capture stamp + latency <= now), or None."""
        for frame in reversed(self.frames):
            if frame.stamp + self.cfg.latency_s <= now + 1e-12:
                return frame
        return None
