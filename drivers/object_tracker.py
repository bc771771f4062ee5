"""The object-tracker device interface (the D435 pipeline, the twin's tracker, a mirror).

A camera delivers up to 90 frames/s, each with a capture timestamp older than its arrival.
``read(now)`` returns the newest observation that has *arrived* by ``now``; its ``stamp`` is the
capture time (s, the caller's clock). Position: object centre in the world frame, m.
When the object was not found in a frame, ``valid`` is False and ``position`` is None (never invented).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from handover.drivers.device import Device, Lifecycle


@dataclass(frozen=True)
class ObjectObservation:
    stamp: float  # capture time, s
    valid: bool
    position: Optional[np.ndarray] = None  # (3,) world frame, m; None when not valid


class ObjectTracker(Device):
    """Base class; backends implement ``_on_read(now) -> ObjectObservation | None`` (None: nothing
    has arrived yet; read then raises nothing and returns an invalid observation stamped -inf)."""

    def read(self, now: float) -> ObjectObservation:
        self._require({Lifecycle.INACTIVE, Lifecycle.ACTIVE, Lifecycle.STOPPED}, "read")
        obs = self._guarded(self._on_read, "read", now)
        return obs if obs is not None else ObjectObservation(stamp=-np.inf, valid=False)

    def stop(self, now: float) -> None:
        """Trackers only measure: stopping just latches the state like any other device."""
        if self.state is Lifecycle.STOPPED:
            return
        self._require({Lifecycle.INACTIVE, Lifecycle.ACTIVE}, "stop")
        self._enter_stopped()

    def _on_read(self, now: float) -> Optional[ObjectObservation]:
        raise NotImplementedError
