"""Typed, validated configuration of the D435 object tracker (:mod:`handover.drivers.realsense`).

Built with :meth:`RealSenseConfig.from_mapping` from a parsed YAML/JSON mapping (the cell config's
tracker section, or a file of its own); every bad value raises :class:`RealSenseConfigError`
naming where it came from (``source``), the key path (``detector.hue_deg``) and the value.
Constructing the dataclasses directly validates the same way (``__post_init__``).

Rates (decided here, see :class:`RealSenseConfig`): depth 848x480 Z16 at 90 fps, color 848x480 RGB8
at 60 fps (the D435's colour sensor tops out at 60 fps at this size). The detector needs both, so
the tracker produces an observation per *paired* frameset: 60 per second on a D435.
Units: m, pixels, degrees (hue), fps, s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# The D435's stream modes this driver accepts (robot-cell.md): depth up to 90 fps and colour up to
# 60 fps at 848x480.
DEPTH_FPS_CHOICES = (6, 15, 30, 60, 90)
COLOR_FPS_CHOICES = (6, 15, 30, 60)
EXTRINSICS_FILE_PATTERN = "d435_{serial}.yaml"


class RealSenseConfigError(ValueError):
    """A tracker configuration value is invalid; the message names the source, the key and the value."""

    def __init__(self, key: str, problem: str, value: Any = dataclasses.MISSING, source: str = "<memory>"):
        got = "" if value is dataclasses.MISSING else f" (got {value!r})"
        super().__init__(f"{source}: {key}: {problem}{got}")
        self.key, self.problem, self.value, self.source = key, problem, value, source


def _number(key: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> None:
    """Check one scalar: a finite (integer) number within [low, high] (``low`` excluded if low_open)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise RealSenseConfigError(key, f"expected a finite {'integer' if integer else 'number'}", value)
    if low is not None and (value <= low if low_open else value < low):
        raise RealSenseConfigError(key, f"must be {'>' if low_open else '>='} {low}", value)
    if high is not None and value > high:
        raise RealSenseConfigError(key, f"must be <= {high}", value)


@dataclass(frozen=True)
class DetectorConfig:
    """The colour-plus-depth blob detector (:mod:`.detector`).

    A pixel belongs to the object when its colour has a hue within ``hue_tolerance_deg`` of
    ``hue_deg`` (0-360, red 0, the twin's orange cube ~25), saturation >= ``min_saturation`` and value
    >= ``min_value`` (both 0-1), and its aligned depth is within [``min_depth_m``, ``max_depth_m``]
    (depth 0, no data, is never used: ``rs.align`` leaves a zero border). The search runs on every
    ``stride``-th pixel, then at full resolution inside the box around the coarse hits (at most
    ``max_blob_px`` wide/high, else the colour is ambiguous and nothing is reported). At least
    ``min_pixels`` full-resolution pixels must agree. The blob's surface depth is the
    ``depth_percentile``-th percentile of its pixels' depths (near side, robust to single pixels);
    ``center_offset_m`` is how far (m) the object's centre lies behind that depth along the viewing
    ray. Defaults fit the twin's 5 cm cube (half side s = 0.025): percentile 10, offset 0.03
    (~1.2 s), which over 30 rendered poses gave 1.1 mm mean error upright or yawed and 2.1 mm mean
    (6.3 max) tumbling; a sphere of radius r: percentile 10, offset ~0.95 r.
    """

    hue_deg: float = 25.0
    hue_tolerance_deg: float = 15.0
    min_saturation: float = 0.5
    min_value: float = 0.2
    min_depth_m: float = 0.2
    max_depth_m: float = 4.0
    stride: int = 4
    min_pixels: int = 20
    max_blob_px: int = 240
    depth_percentile: float = 10.0
    center_offset_m: float = 0.03

    def __post_init__(self) -> None:
        _number("hue_deg", self.hue_deg, low=0.0, high=360.0)
        _number("hue_tolerance_deg", self.hue_tolerance_deg, low=0.0, high=180.0, low_open=True)
        _number("min_saturation", self.min_saturation, low=0.0, high=1.0)
        _number("min_value", self.min_value, low=0.0, high=1.0)
        _number("min_depth_m", self.min_depth_m, low=0.0, low_open=True)
        _number("max_depth_m", self.max_depth_m, low=self.min_depth_m, low_open=True)
        _number("stride", self.stride, low=1, high=32, integer=True)
        _number("min_pixels", self.min_pixels, low=1, integer=True)
        _number("max_blob_px", self.max_blob_px, low=self.stride, low_open=True, integer=True)
        _number("depth_percentile", self.depth_percentile, low=0.0, high=100.0)
        _number("center_offset_m", self.center_offset_m, low=0.0, high=1.0)


@dataclass(frozen=True)
class RealSenseConfig:
    """One D435 used as the object tracker.

    - ``serial``: the camera's serial number (``rs.camera_info.serial_number``); selects the USB
      device and names the extrinsics file ``<calibration_dir>/d435_<serial>.yaml``
      (:mod:`.extrinsics`).
    - ``width`` x ``height``: both streams, px (848x480, the D435's best depth mode at 90 fps).
    - ``depth_fps``: 90. ``color_fps``: 60, the D435's colour limit at 848x480. The pipeline pairs
      each colour frame with the depth frame nearest in time; depth frames without a colour partner
      (30 of the 90 per second) come out alone and are not used: observations arrive at ``color_fps``.
      A depth-only mode would keep 90/s but cannot tell the object from a hand by colour.
    - ``max_pair_skew_s``: a frameset whose depth and colour capture times differ by more than this
      (s), or whose colour frame was already used with an earlier depth frame (librealsense's syncer
      pairs a depth frame with the last colour frame when no newer one came), is skipped: the object
      moves between the two exposures. Default: half a colour period at 60 fps.
    - ``calibration_dir``: folder of the extrinsics files; relative paths are relative to the folder
      of the file the config came from (``from_mapping(base_dir=...)``).
    - ``detector``: :class:`DetectorConfig`.
    """

    serial: str
    calibration_dir: Path
    width: int = 848
    height: int = 480
    depth_fps: int = 90
    color_fps: int = 60
    max_pair_skew_s: float = 0.0084
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.serial, str) or not self.serial.strip() or "/" in self.serial:
            raise RealSenseConfigError("serial", "expected a non-empty string without '/' (the camera's serial number)",
                                       self.serial)
        if not isinstance(self.calibration_dir, Path):
            raise RealSenseConfigError("calibration_dir", "expected a path", self.calibration_dir)
        _number("width", self.width, low=1, high=1280, integer=True)
        _number("height", self.height, low=1, high=720, integer=True)
        if self.depth_fps not in DEPTH_FPS_CHOICES:
            raise RealSenseConfigError("depth_fps", f"the D435 streams depth at one of {DEPTH_FPS_CHOICES} fps",
                                       self.depth_fps)
        if self.color_fps not in COLOR_FPS_CHOICES:
            raise RealSenseConfigError("color_fps", f"the D435 streams colour at one of {COLOR_FPS_CHOICES} fps "
                                       "(60 at most)", self.color_fps)
        _number("max_pair_skew_s", self.max_pair_skew_s, low=0.0, high=1.0)
        if not isinstance(self.detector, DetectorConfig):
            raise RealSenseConfigError("detector", "expected a DetectorConfig", self.detector)

    @property
    def extrinsics_path(self) -> Path:
        """The camera-to-world calibration file of this camera (named per serial)."""
        return self.calibration_dir / EXTRINSICS_FILE_PATTERN.format(serial=self.serial)

    @property
    def frame_period_s(self) -> float:
        """Time between two observations (s): one per colour frame."""
        return 1.0 / self.color_fps

    @staticmethod
    def from_mapping(raw: Any, source: str = "<memory>", base_dir: Path | None = None) -> "RealSenseConfig":
        """Validate a parsed mapping (YAML/JSON): unknown keys, wrong types and bad values raise
        :class:`RealSenseConfigError` naming ``source``, the key and the value. Missing keys
        take the defaults above, except ``serial`` and ``calibration_dir``."""
        try:
            return _build(raw, base_dir if base_dir is not None else Path.cwd())
        except RealSenseConfigError as exc:
            raise RealSenseConfigError(exc.key, exc.problem, exc.value, source=source) from None


def _check_keys(raw: Any, cls: type, prefix: str) -> Mapping:
    if not isinstance(raw, Mapping):
        raise RealSenseConfigError(prefix or "<top level>", f"expected a mapping for {cls.__name__}", raw)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise RealSenseConfigError(f"{prefix}{key}", f"unknown key; expected one of {sorted(known)}")
    return raw


def _build(raw: Any, base_dir: Path) -> RealSenseConfig:
    raw = dict(_check_keys(raw, RealSenseConfig, ""))
    for required in ("serial", "calibration_dir"):
        if required not in raw:
            raise RealSenseConfigError(required, "missing key")
    if isinstance(raw["serial"], int) and not isinstance(raw["serial"], bool):
        raw["serial"] = str(raw["serial"])  # YAML reads an unquoted serial as a number
    cal = raw["calibration_dir"]
    if not isinstance(cal, str) or not cal:
        raise RealSenseConfigError("calibration_dir", "expected a folder path (string)", cal)
    raw["calibration_dir"] = (base_dir / cal) if not Path(cal).is_absolute() else Path(cal)
    det = _check_keys(raw.get("detector", {}), DetectorConfig, "detector.")
    try:
        raw["detector"] = DetectorConfig(**det)
    except RealSenseConfigError as exc:
        raise RealSenseConfigError(f"detector.{exc.key}", exc.problem, exc.value) from None
    return RealSenseConfig(**raw)
