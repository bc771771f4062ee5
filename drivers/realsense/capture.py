"""Still colour frames from a D435 (or its emulator) through the real ``pyrealsense2`` pipeline, for
the extrinsics calibration (``handover calibrate extrinsics --from-camera``).

:func:`capture_color` opens the camera (a ``pyrealsense2`` device such as the emulator's
``software_device``, or the serial of a USB camera: an unknown serial is a :class:`CaptureError`
naming it and the serials connected), starts only the colour stream in the tracker's mode (848x480
RGB8 at 60 fps, :class:`~handover.drivers.realsense.config.RealSenseConfig`'s defaults), lets
auto-exposure settle for ``warmup`` frames, then grabs ``count`` frames ``interval_s`` apart (on
``clock``; the operator moves the board in between), printing ``frame k/N`` to ``progress`` (stderr).
The frame after each interval is a new one (the one waiting when the interval ends is dropped).
The pipeline is stopped on every way out (errors, Ctrl-C).

Returns the images (RGB uint8 (H, W, 3) copies) and the colour stream's intrinsics as the stream
profile reports them (librealsense's fx, fy, ppx, ppy in px with pixel centres at integer
coordinates, distortion model and coefficients): :meth:`StreamIntrinsics.opencv_coeffs` turns them
into OpenCV's (k1, k2, p1, p2, k3).

Pacing: a real camera streams by itself; an emulator is pushed by its caller. ``pump`` (optional)
is called whenever the function waits for a frame or for an interval to pass, instead of sleeping:
a test passes one that captures and delivers one emulator frame and advances its simulated clock
(``clock``). Frame timeouts (``timeout_s``) are on the wall clock.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, TextIO, Union

import numpy as np
import pyrealsense2 as rs

from handover.drivers.realsense.config import RealSenseConfig
from handover.drivers.realsense.intrinsics import StreamIntrinsics

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RealSenseConfig)}
WIDTH, HEIGHT, FPS = _DEFAULTS["width"], _DEFAULTS["height"], _DEFAULTS["color_fps"]  # the tracker's colour mode


class CaptureError(RuntimeError):
    """The camera is not there, does not start or sends no frames; the message names its serial."""


@dataclass
class ColorCapture:
    serial: str  # the device's serial number (camera info)
    images: list[np.ndarray]  # RGB uint8 (H, W, 3), in capture order
    intrinsics: StreamIntrinsics


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense cameras connected to this host (USB)."""
    return sorted(d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices())


def select_device(pipe: rs.pipeline, rs_config: rs.config, camera: Union[rs.device, str]) -> str:
    """Make ``pipe`` open ``camera``: a device object (an emulator's ``software_device``), or the
    serial of a connected camera (else :class:`CaptureError`). Returns the serial."""
    if isinstance(camera, str):
        found = connected_serials()
        if camera not in found:
            raise CaptureError(f"no D435 with serial {camera} connected (found: {', '.join(found) or 'no RealSense camera'})")
        rs_config.enable_device(camera)
        return camera
    pipe.set_device(camera)
    return camera.get_info(rs.camera_info.serial_number)


def capture_color(camera: Union[rs.device, str], count: int, interval_s: float = 0.0, *, warmup: int = 30,
                  width: int = WIDTH, height: int = HEIGHT, fps: int = FPS, pump: Optional[Callable[[], None]] = None,
                  clock: Callable[[], float] = time.monotonic, timeout_s: float = 5.0,
                  progress: Optional[TextIO] = None) -> ColorCapture:
    """``count`` colour frames of ``camera``, ``interval_s`` apart after ``warmup`` frames (module doc)."""
    if count < 1 or interval_s < 0 or warmup < 0:
        raise ValueError(f"capture_color: count >= 1, interval_s >= 0, warmup >= 0 (got {count}, {interval_s}, {warmup})")
    out = sys.stderr if progress is None else progress
    pipe, rs_config = rs.pipeline(), rs.config()
    serial = select_device(pipe, rs_config, camera)
    rs_config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
    try:
        profile = pipe.start(rs_config)
    except RuntimeError as exc:
        raise CaptureError(f"cannot start the colour stream of the D435 {serial} at {width}x{height}@{fps}: {exc}") from None
    wait = pump or (lambda: time.sleep(0.002))

    def next_frame() -> rs.video_frame:
        deadline = time.monotonic() + timeout_s
        while True:
            frames = pipe.poll_for_frames()
            color = frames.get_color_frame() if frames else None
            if color:
                return color
            if time.monotonic() > deadline:
                raise CaptureError(f"no colour frame from the D435 {serial} within {timeout_s:g} s")
            wait()

    try:
        intr = StreamIntrinsics.from_rs(profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics())
        for _ in range(warmup):  # auto-exposure settles
            next_frame()
        images: list[np.ndarray] = []
        taken = clock()
        for k in range(count):
            if k and interval_s > 0:
                until = taken + interval_s
                while clock() < until:
                    pipe.poll_for_frames()  # drop what comes in meanwhile
                    wait()
                pipe.poll_for_frames()  # the frame waiting now may predate the interval's end
            images.append(np.array(next_frame().get_data(), dtype=np.uint8, copy=True))
            taken = clock()
            more = f"; move the board, next in {interval_s:g} s" if interval_s > 0 and k + 1 < count else ""
            print(f"frame {k + 1}/{count}{more}", file=out, flush=True)
        return ColorCapture(serial, images, intr)
    finally:
        try:
            pipe.stop()
        except RuntimeError:
            pass
