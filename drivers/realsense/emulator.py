"""An emulated D435: a librealsense ``software_device`` fed with depth and colour images from a
frame source, so the real SDK (pipeline, syncer, align, deprojection) runs on them unmodified.

- The device: two sensors as on a D435, "Stereo Module" with a depth stream (Z16, ``depth_fps``)
  and "RGB Camera" with a colour stream (RGB8, ``color_fps``), both ``width`` x ``height`` with the given pinhole intrinsics (no
  distortion), extrinsics from depth to colour registered (identity by default: a twin renders
  both from one camera), the depth units as a read-only option and on every frame, serial and name
  as camera info. Each sensor sets the ``actual_fps`` metadata (its own rate): librealsense 2.59's syncer never
  pairs software frames without it.
- The frame source: any callable returning ``(depth_m, color_rgb, capture_time)``: depth (H, W)
  in m along the optical axis (0, NaN or inf: no data), colour (H, W, 3) uint8, capture time in s
  on the emulated host's clock (the twin's: simulation time). Depth is quantised to Z16 counts.
- Timestamps: ``capture_time * 1000`` ms in the ``system_time`` domain (the host clock, as a D435
  with global time reports it); frame numbers count captures, dropped ones included, so a gap in
  the numbers shows a drop, as on the camera.
- Pacing is the caller's: :meth:`capture` takes one frame from the source and queues it,
  :meth:`deliver` pushes every queued frame due by ``now`` (s, same clock). Colour frames are
  pushed with the depth frames of the captures on the colour schedule (``color_fps`` <= ``depth_fps``;
  90/60: two colour frames every three depth frames); the others go out as depth only.
- Faults (:class:`FaultConfig` and :meth:`drop_next` / :meth:`delay_next`): a *dropped* frame is
  never pushed; a *late* frame is due ``late_s`` after its capture, and the frames behind it wait
  for it (first in, first out, like a stalled USB transfer); they all keep their capture stamps.

Use on its own: ``emu = D435Emulator(source, EmulatorConfig(...))``, then ``rs.pipeline()`` with
``pipe.set_device(emu.device)`` (or :class:`~handover.drivers.realsense.driver.RealSenseTracker`
with ``device=emu.device``) and ``emu.capture(); emu.deliver(now)`` per frame. librealsense
processes a pushed frame synchronously: a ``poll_for_frames()`` right after :meth:`deliver` sees it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pyrealsense2 as rs

from handover.drivers.realsense.config import COLOR_FPS_CHOICES, DEPTH_FPS_CHOICES
from handover.drivers.realsense.intrinsics import StreamIntrinsics

Frame = tuple[np.ndarray, np.ndarray, float]  # depth (H, W) m, colour (H, W, 3) uint8, capture time s
FrameSource = Callable[[], Frame]
_IDENTITY_ROTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class FaultConfig:
    """Random faults, per captured frame: dropped with ``drop_probability``, else late by ``late_s``
    with ``late_probability`` (``seed`` makes them repeatable)."""

    drop_probability: float = 0.0
    late_probability: float = 0.0
    late_s: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_probability", "late_probability"):
            p = getattr(self, name)
            if not (0.0 <= p < 1.0):
                raise ValueError(f"FaultConfig.{name}: must be in [0, 1) (got {p!r})")
        if not (math.isfinite(self.late_s) and self.late_s > 0):
            raise ValueError(f"FaultConfig.late_s: must be a finite number > 0 s (got {self.late_s!r})")


@dataclass(frozen=True)
class EmulatorConfig:
    """The emulated camera: serial, stream modes (as a D435's), intrinsics, depth units (m per
    count), depth-to-colour extrinsics (row-major rotation, translation m)."""

    intrinsics: StreamIntrinsics
    serial: str = "EMU-D435"
    depth_fps: int = 90
    color_fps: int = 60
    depth_units_m: float = 0.001
    depth_to_color_rotation: tuple[float, ...] = _IDENTITY_ROTATION
    depth_to_color_translation: tuple[float, ...] = (0.0, 0.0, 0.0)
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if self.depth_fps not in DEPTH_FPS_CHOICES:
            raise ValueError(f"EmulatorConfig.depth_fps: one of {DEPTH_FPS_CHOICES} (got {self.depth_fps!r})")
        if self.color_fps not in COLOR_FPS_CHOICES + (90,) or self.color_fps > self.depth_fps:
            raise ValueError(f"EmulatorConfig.color_fps: at most depth_fps {self.depth_fps} (got {self.color_fps!r})")
        if not (0 < self.depth_units_m <= 0.01):
            raise ValueError(f"EmulatorConfig.depth_units_m: in (0, 0.01] m (got {self.depth_units_m!r})")
        if len(self.depth_to_color_rotation) != 9 or len(self.depth_to_color_translation) != 3:
            raise ValueError("EmulatorConfig: depth_to_color_rotation needs 9 numbers, _translation 3")


@dataclass
class _Queued:
    number: int
    capture_time: float
    due: float
    depth: np.ndarray  # uint16 counts
    color: Optional[np.ndarray]  # None: not on the colour schedule


@dataclass
class EmulatorStats:
    captured: int = 0
    dropped: int = 0
    delayed: int = 0
    delivered: int = 0


class D435Emulator:
    """A ``software_device`` D435 (see the module doc). ``device`` is what a pipeline opens."""

    DEPTH_SENSOR = "Stereo Module"
    COLOR_SENSOR = "RGB Camera"

    def __init__(self, source: FrameSource, config: EmulatorConfig):
        self.source = source
        self.config = config
        self.stats = EmulatorStats()
        self._rng = np.random.default_rng(config.faults.seed)
        self._queue: deque[_Queued] = deque()
        self._drop_next = 0
        self._late_next: list[float] = []
        self._next_color = -math.inf  # capture time from which the next colour frame is due
        self._last_capture = -math.inf
        cfg, intr = config, config.intrinsics.to_rs()
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Intel RealSense D435 (emulated)")
        self.device.register_info(rs.camera_info.serial_number, cfg.serial)
        self.device.register_info(rs.camera_info.product_line, "D400")
        # Two sensors, as on a D435 (one sensor cannot stream two rates): depth and colour.
        self._depth_sensor = self.device.add_sensor(self.DEPTH_SENSOR)
        self._color_sensor = self.device.add_sensor(self.COLOR_SENSOR)
        self._depth_profile = self._depth_sensor.add_video_stream(
            self._stream(rs.stream.depth, 0, cfg.depth_fps, 2, rs.format.z16, intr)).as_video_stream_profile()
        self._color_profile = self._color_sensor.add_video_stream(
            self._stream(rs.stream.color, 1, cfg.color_fps, 3, rs.format.rgb8, intr)).as_video_stream_profile()
        ext = rs.extrinsics()
        ext.rotation = list(cfg.depth_to_color_rotation)
        ext.translation = list(cfg.depth_to_color_translation)
        self._depth_profile.register_extrinsics_to(self._color_profile, ext)
        self._depth_sensor.add_read_only_option(rs.option.depth_units, cfg.depth_units_m)
        # Without actual_fps the 2.59 syncer never pairs software frames (device-protocols.md).
        self._depth_sensor.set_metadata(rs.frame_metadata_value.actual_fps, cfg.depth_fps * 1000)
        self._color_sensor.set_metadata(rs.frame_metadata_value.actual_fps, cfg.color_fps * 1000)

    def _stream(self, kind, uid: int, fps: int, bpp: int, fmt, intr: rs.intrinsics) -> rs.video_stream:
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = kind, 0, uid
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = intr.width, intr.height, fps, bpp, fmt
        vs.intrinsics = intr
        return vs

    # -- faults -----------------------------------------------------------------------------------

    def drop_next(self, count: int = 1) -> None:
        """The next ``count`` captures are dropped (never pushed)."""
        self._drop_next += int(count)

    def delay_next(self, late_s: float, count: int = 1) -> None:
        """The next ``count`` captures arrive ``late_s`` s after their capture (frames behind them wait)."""
        if not (math.isfinite(late_s) and late_s > 0):
            raise ValueError(f"late_s must be a finite number > 0 s (got {late_s!r})")
        self._late_next.extend([float(late_s)] * int(count))

    # -- frames -----------------------------------------------------------------------------------

    def capture(self) -> float:
        """Take one frame from the source and queue it (or drop it); returns its capture time (s)."""
        depth_m, color, t = self.source()
        cfg, intr = self.config, self.config.intrinsics
        t = float(t)
        if not math.isfinite(t) or t <= self._last_capture:
            raise ValueError(f"{cfg.serial}: capture times must be finite and increase (got {t!r} after "
                             f"{self._last_capture!r})")
        if depth_m.shape != (intr.height, intr.width) or color.shape != (intr.height, intr.width, 3):
            raise ValueError(f"{cfg.serial}: frames must be depth ({intr.height}, {intr.width}) and colour "
                             f"({intr.height}, {intr.width}, 3); got {depth_m.shape} and {color.shape}")
        self._last_capture = t
        number = self.stats.captured
        self.stats.captured += 1
        with_color = t + 1e-9 >= self._next_color
        if with_color:  # colour frames on their own (slower) schedule, aligned to depth captures
            period = 1.0 / cfg.color_fps
            self._next_color = t + period if self._next_color == -math.inf else max(self._next_color + period, t)
        if self._drop_next > 0 or (cfg.faults.drop_probability and self._rng.random() < cfg.faults.drop_probability):
            self._drop_next = max(0, self._drop_next - 1)
            self.stats.dropped += 1
            return t
        late = 0.0
        if self._late_next:
            late = self._late_next.pop(0)
        elif cfg.faults.late_probability and self._rng.random() < cfg.faults.late_probability:
            late = cfg.faults.late_s
        if late:
            self.stats.delayed += 1
        due = t + late
        if self._queue:  # first in, first out: nobody overtakes a late frame
            due = max(due, self._queue[-1].due)
        counts = np.nan_to_num(np.asarray(depth_m, dtype=np.float64) / cfg.depth_units_m, nan=0.0, posinf=0.0, neginf=0.0)
        depth = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
        rgb = np.ascontiguousarray(color, dtype=np.uint8) if with_color else None
        self._queue.append(_Queued(number, t, due, depth, rgb))
        return t

    def deliver(self, now: float) -> int:
        """Push every queued frame due by ``now`` (s), oldest first; returns how many."""
        pushed = 0
        while self._queue and self._queue[0].due <= now + 1e-12:
            self._push(self._queue.popleft())
            pushed += 1
        return pushed

    def pending(self) -> int:
        """Frames captured but not delivered yet (late ones and those behind them)."""
        return len(self._queue)

    def _push(self, q: _Queued) -> None:
        cfg, intr = self.config, self.config.intrinsics
        stamp_ms = q.capture_time * 1000.0
        frame = rs.software_video_frame()
        frame.pixels, frame.stride, frame.bpp = q.depth, intr.width * 2, 2
        frame.timestamp, frame.domain, frame.frame_number = stamp_ms, rs.timestamp_domain.system_time, q.number
        frame.profile, frame.depth_units = self._depth_profile, cfg.depth_units_m
        self._depth_sensor.on_video_frame(frame)
        if q.color is not None:
            cframe = rs.software_video_frame()
            cframe.pixels, cframe.stride, cframe.bpp = q.color, intr.width * 3, 3
            cframe.timestamp, cframe.domain, cframe.frame_number = stamp_ms, rs.timestamp_domain.system_time, q.number
            cframe.profile = self._color_profile
            self._color_sensor.on_video_frame(cframe)
        self.stats.delivered += 1


class StaticFrames:
    """A frame source that shows the same images every time, captured at ``clock()`` (s): for
    tests and benchmarks of a still scene without re-rendering it."""

    def __init__(self, depth_m: np.ndarray, color: np.ndarray, clock: Callable[[], float]):
        self.depth_m, self.color, self.clock = depth_m, color, clock

    def __call__(self) -> Frame:
        return self.depth_m, self.color, float(self.clock())
