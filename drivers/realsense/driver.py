"""The D435 object tracker: an :class:`~handover.drivers.object_tracker.ObjectTracker` on ``pyrealsense2``.

Per paired frameset (depth + colour, :class:`~handover.drivers.realsense.config.RealSenseConfig`):
``rs.align(rs.stream.color)`` maps depth into the colour image; the detector
(:mod:`.detector`) finds the object's centroid pixel (u, v) and near-surface depth z;
``rs.rs2_deproject_pixel_to_point(colour intrinsics, [u, v], z)`` gives the surface point in the
colour optical frame (x right, y down, z forward, m), moved ``center_offset_m`` further along its
viewing ray to the object's centre; the extrinsics (:mod:`.extrinsics`) take it to the world frame.

Clocks. ``read(now)`` takes ``now`` on the caller's clock, which must be the driver's ``clock``
(default ``time.monotonic``; a simulated clock with an emulator). A frame's capture time is its
``get_timestamp()`` (ms) in its timestamp domain, converted to ``clock``:

- ``system_time`` / ``global_time`` (a D435 with global time on, the default, and the emulator):
  the host's realtime clock ``wall_clock`` (default ``time.time``): stamp = ts - wall_clock() +
  clock(), the two clocks read together at conversion;
- ``hardware_clock`` (the camera's own counter): stamp = ts + min over frames of (clock() at
  arrival - ts): exact up to the smallest transport delay seen, which it is late by.

Stamps: the depth frame's capture time. Invariants: stamps never decrease (a frameset captured
before the newest one used is discarded and counted in ``stats.out_of_order``) and are ``<= now``
(a frame converted to after ``now`` waits for a later read).

Reads: the pipeline delivers its framesets into a small ``rs.frame_queue`` (a pipeline's own
queue keeps only the newest frameset, which on a D435 is a depth-only one a third of the time);
``read(now)`` drains it without blocking, runs align + detection on the newest usable pair only,
and returns the newest observation: ``valid`` with the position (m,
world) when the object was found, else ``valid`` False and ``position`` None with that frame's
stamp (``last_reason`` says why). Dropped frames: reads keep returning the newest observation with
its capture stamp, which grows stale (``now - stamp`` is the age; nothing is invented). Late
frames keep their capture stamps. Before any frameset: ``None`` (the base class's invalid, -inf).
Framesets without both streams, or whose colour frame is an old one (on a D435, the 30 depth
frames a second with no colour partner of their own: ``max_pair_skew_s``), are skipped and counted
in ``stats.unpaired``.

Lifecycle: configure loads the extrinsics file (named per serial) and starts the pipeline on the
given device (a ``software_device``) or on the USB camera with the configured serial; close stops
it. Any SDK error in configure or read is a FAULT naming the device and the SDK's message.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pyrealsense2 as rs

from handover.drivers.object_tracker import ObjectObservation, ObjectTracker
from handover.drivers.realsense.config import RealSenseConfig
from handover.drivers.realsense.detector import ColorDepthDetector, Detection
from handover.drivers.realsense.extrinsics import load_extrinsics

_WALL_DOMAINS = (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time)


@dataclass
class TrackerStats:
    framesets: int = 0  # paired framesets processed
    unpaired: int = 0  # framesets without depth or colour, skipped
    found: int = 0  # framesets with a detection
    out_of_order: int = 0  # framesets older than the newest one used, discarded


class CaptureClock:
    """Converts frame timestamps (ms, per domain) to capture times on ``clock`` (s); module doc."""

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float]):
        self.clock, self.wall_clock = clock, wall_clock
        self._hw_offset = math.inf  # s, min over frames of (arrival on clock - hardware timestamp)

    def to_clock(self, timestamp_ms: float, domain) -> float:
        ts = timestamp_ms / 1000.0
        if domain in _WALL_DOMAINS:
            return ts - self.wall_clock() + self.clock()
        self._hw_offset = min(self._hw_offset, self.clock() - ts)
        return ts + self._hw_offset


class RealSenseTracker(ObjectTracker):
    """The D435 tracker (module doc). ``device``: a librealsense device to open (an emulator's
    ``software_device``); None opens the USB camera whose serial is ``config.serial``."""

    # Framesets the pipeline queues between two reads (older ones are dropped by the queue): at
    # 90 fps, reads at least every 44 ms see every frameset. Small, not to starve the SDK's frame pool.
    QUEUE_CAPACITY = 4

    def __init__(self, config: RealSenseConfig, device: Optional[rs.device] = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 name: Optional[str] = None):
        super().__init__(name=name or f"realsense/{config.serial}")
        self.config = config
        self._device = device
        self._clock, self._wall_clock = clock, wall_clock
        self.detector = ColorDepthDetector(config.detector)
        self.stats = TrackerStats()
        self.last_reason = "not configured"
        self._pipe: Optional[rs.pipeline] = None
        self._queue: Optional[rs.frame_queue] = None
        self._reset()

    def _reset(self) -> None:
        self._align = rs.align(rs.stream.color)
        self._capture_clock = CaptureClock(self._clock, self._wall_clock)
        self._latest: Optional[ObjectObservation] = None
        self._waiting: Optional[ObjectObservation] = None  # converted to after the last now
        self._intrinsics: Optional[rs.intrinsics] = None
        self._last_color_number: Optional[int] = None
        self.world_from_camera: Optional[np.ndarray] = None

    # -- lifecycle --------------------------------------------------------------------------------

    def _on_configure(self) -> None:
        cfg = self.config
        self._reset()
        self.world_from_camera = load_extrinsics(cfg.extrinsics_path, cfg.serial)
        pipe, rs_cfg = rs.pipeline(), rs.config()
        if self._device is not None:
            pipe.set_device(self._device)
        else:
            rs_cfg.enable_device(cfg.serial)
        rs_cfg.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.depth_fps)
        rs_cfg.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.color_fps)
        queue = rs.frame_queue(self.QUEUE_CAPACITY)
        try:
            profile = pipe.start(rs_cfg, queue)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot start the D435 {cfg.serial} at depth {cfg.width}x{cfg.height}@{cfg.depth_fps} "
                               f"and colour @{cfg.color_fps}: {exc}") from exc
        self._pipe, self._queue = pipe, queue
        self._intrinsics = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.last_reason = "no frame yet"

    def _on_close(self) -> None:
        pipe, self._pipe, self._queue = self._pipe, None, None
        if pipe is not None:
            try:
                pipe.stop()
            except RuntimeError:
                pass  # not started (a configure that failed half way)

    # -- reads ------------------------------------------------------------------------------------

    def _on_read(self, now: float) -> Optional[ObjectObservation]:
        if self._pipe is None or self._queue is None:
            raise RuntimeError("pipeline not started")
        newest = None
        while True:  # drain: keep the newest usable pair, release the rest
            frame = self._queue.poll_for_frame()
            if not frame:
                break
            frames = frame.as_frameset()
            if self._usable(frames):
                newest = frames
        if newest is not None:
            obs = self._process(newest)
            if obs is not None:
                self._waiting = obs
        if self._waiting is not None and self._waiting.stamp <= now:
            self._latest, self._waiting = self._waiting, None
        return self._latest

    def _usable(self, frames: rs.composite_frame) -> bool:
        """A frameset with both streams whose colour frame is new and close in time to its depth frame."""
        depth, color = frames.get_depth_frame(), frames.get_color_frame()
        if not depth or not color:
            self.stats.unpaired += 1
            return False
        number, seen = color.get_frame_number(), self._last_color_number
        self._last_color_number = number
        if number == seen or abs(depth.get_timestamp() - color.get_timestamp()) / 1000.0 > self.config.max_pair_skew_s:
            self.stats.unpaired += 1  # depth paired with an old colour frame: the object moved in between
            return False
        return True

    def _process(self, frames: rs.composite_frame) -> Optional[ObjectObservation]:
        """One usable frameset to an observation (None: older than the newest one used)."""
        depth = frames.get_depth_frame()
        stamp = self._capture_clock.to_clock(depth.get_timestamp(), depth.get_frame_timestamp_domain())
        newest = self._waiting or self._latest
        if newest is not None and stamp < newest.stamp:
            self.stats.out_of_order += 1
            return None
        self.stats.framesets += 1
        position = self.locate(self._align.process(frames))
        if position is None:
            return ObjectObservation(stamp=stamp, valid=False)
        self.stats.found += 1
        return ObjectObservation(stamp=stamp, valid=True, position=position)

    def locate(self, aligned: rs.composite_frame) -> Optional[np.ndarray]:
        """The object's centre (m, world) in an aligned frameset, or None (``last_reason`` says why)."""
        depth = aligned.get_depth_frame()
        det = self.detector.detect(np.asanyarray(depth.get_data()), depth.get_units(),
                                   np.asanyarray(aligned.get_color_frame().get_data()))
        if det is None:
            self.last_reason = self.detector.last_reason
            return None
        self.last_reason = ""
        return self.to_world(det)

    def to_world(self, det: Detection) -> np.ndarray:
        """Deproject a detection (colour intrinsics) and move it to the object's centre, world frame (m)."""
        surface = np.asarray(rs.rs2_deproject_pixel_to_point(self._intrinsics, [det.u, det.v], det.depth_m))
        centre = surface * (1.0 + self.config.detector.center_offset_m / np.linalg.norm(surface))
        return self.world_from_camera[:3, :3] @ centre + self.world_from_camera[:3, 3]
