"""handover.drivers.realsense: the Intel RealSense D435 object tracker on ``pyrealsense2`` and its
emulator (a librealsense ``software_device``).

- :mod:`.config`: :class:`RealSenseConfig` / :class:`DetectorConfig`, validated at load time.
- :mod:`.extrinsics`: the camera-to-world calibration file, one per camera serial.
- :mod:`.detector`: the colour + depth blob detector.
- :mod:`.driver`: :class:`RealSenseTracker`, the ObjectTracker backend (needs ``pyrealsense2``).
- :mod:`.emulator`: :class:`D435Emulator`, a software D435 fed by any frame source, with dropped and
  late frames (needs ``pyrealsense2``).
- :mod:`.benchmark`: ms per frame of align + detect + deproject.
- :mod:`.intrinsics`: :class:`StreamIntrinsics`, a stream's intrinsics (what the emulator streams,
  what a capture reads back), with OpenCV's distortion coefficients for it.
- :mod:`.capture`: still colour frames and the stream's intrinsics through the pipeline, for the
  extrinsics calibration (needs ``pyrealsense2``).

This package imports without ``pyrealsense2`` (config and extrinsics only); ``pyrealsense2`` needs the
Debian library ``libusb-1.0-0``.
"""

from handover.drivers.realsense.config import DetectorConfig, RealSenseConfig, RealSenseConfigError
from handover.drivers.realsense.extrinsics import ExtrinsicsError, load_extrinsics, write_extrinsics

__all__ = ["DetectorConfig", "RealSenseConfig", "RealSenseConfigError", "ExtrinsicsError", "load_extrinsics",
           "write_extrinsics"]
