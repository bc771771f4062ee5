"""Camera-to-world extrinsics of a D435: one small YAML (or JSON, which is YAML) file per camera,
``<calibration_dir>/d435_<serial>.yaml``, loaded when the tracker is configured.

Format (the pose of the camera's *colour optical frame* in the world frame; the tracker aligns
depth to colour, so its 3D points are in that frame: x right, y down, z forward along the optical
axis; world frame: the cell's, z up; metres)::

    serial: "123456789012"          # must equal the file name's serial
    parent: world                   # optional; if given, must be "world"
    child: d435_color_optical_frame # optional; if given, must be this
    # either a 4x4 homogeneous matrix, world_from_camera (rows; last row 0 0 0 1) ...
    matrix: [[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz], [0, 0, 0, 1]]
    # ... or a translation and a unit quaternion in ROS order (x, y, z, w):
    translation: [tx, ty, tz]       # camera origin in the world, m
    rotation_xyzw: [qx, qy, qz, qw] # camera axes in the world; norm within 1e-3 of 1 (normalised)

A point ``p_cam`` (m, optical frame) maps to ``p_world = R @ p_cam + t``. Any problem (missing file,
not YAML, unknown key, both or neither forms, wrong shape, non-finite number, a rotation that is not
a rotation) raises :class:`ExtrinsicsError` naming the file, the key and the value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PARENT_FRAME = "world"
CHILD_FRAME = "d435_color_optical_frame"
_KEYS = {"serial", "parent", "child", "matrix", "translation", "rotation_xyzw"}
QUATERNION_NORM_TOLERANCE = 1e-3
ROTATION_TOLERANCE = 1e-4  # max |R^T R - I| entry of a matrix rotation


class ExtrinsicsError(ValueError):
    """A calibration file is missing or malformed; the message names the file, key and value."""


def _fail(path: Path, key: str, problem: str, value: Any = None) -> ExtrinsicsError:
    got = "" if value is None else f" (got {value!r})"
    return ExtrinsicsError(f"{path}: {key}: {problem}{got}")


def _floats(path: Path, key: str, raw: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(path, key, f"expected numbers of shape {shape}", raw) from None
    if arr.shape != shape or any(isinstance(x, bool) for x in np.ravel(np.array(raw, dtype=object))):
        raise _fail(path, key, f"expected numbers of shape {shape}", raw)
    if not np.isfinite(arr).all():
        raise _fail(path, key, "every number must be finite", raw)
    return arr


def quaternion_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w)."""
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion_xyzw(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w, w >= 0) of a 3x3 rotation."""
    m = np.asarray(r, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def load_extrinsics(path: str | Path, serial: str) -> np.ndarray:
    """The 4x4 ``world_from_camera`` (m) of camera ``serial`` from ``path`` (format: module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ExtrinsicsError(f"{path}: camera extrinsics file not found (calibrate camera {serial} and write it; "
                              f"format: handover.drivers.realsense.extrinsics)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ExtrinsicsError(f"{path}: cannot read the extrinsics as YAML/JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise _fail(path, "<top level>", "expected a mapping", raw)
    for key in raw:
        if key not in _KEYS:
            raise _fail(path, str(key), f"unknown key; expected some of {sorted(_KEYS)}")
    file_serial = raw.get("serial")
    if str(file_serial) != serial:
        raise _fail(path, "serial", f"expected {serial!r} (the camera this file is named after)", file_serial)
    for key, expected in (("parent", PARENT_FRAME), ("child", CHILD_FRAME)):
        if key in raw and raw[key] != expected:
            raise _fail(path, key, f"expected {expected!r}", raw[key])
    has_matrix = "matrix" in raw
    has_pose = "translation" in raw or "rotation_xyzw" in raw
    if has_matrix == has_pose:
        raise _fail(path, "matrix|translation+rotation_xyzw", "give either 'matrix' or both 'translation' and "
                    "'rotation_xyzw'" + (" (not both forms)" if has_matrix else ""))
    if has_matrix:
        m = _floats(path, "matrix", raw["matrix"], (4, 4))
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
            raise _fail(path, "matrix[3]", "the last row must be [0, 0, 0, 1]", raw["matrix"][3])
        r = m[:3, :3]
        if np.abs(r.T @ r - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(r) < 0:
            raise _fail(path, "matrix", f"the upper-left 3x3 is not a rotation (orthonormal within "
                        f"{ROTATION_TOLERANCE}, determinant +1)", raw["matrix"])
        return m
    for key in ("translation", "rotation_xyzw"):
        if key not in raw:
            raise _fail(path, key, "missing key (needed with the other of translation/rotation_xyzw)")
    t = _floats(path, "translation", raw["translation"], (3,))
    q = _floats(path, "rotation_xyzw", raw["rotation_xyzw"], (4,))
    if abs(np.linalg.norm(q) - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise _fail(path, "rotation_xyzw", f"not a unit quaternion (norm {np.linalg.norm(q):.6f}, "
                    f"tolerance {QUATERNION_NORM_TOLERANCE})", raw["rotation_xyzw"])
    m = np.eye(4)
    m[:3, :3] = quaternion_xyzw_to_matrix(q / np.linalg.norm(q))
    m[:3, 3] = t
    return m


def write_extrinsics(path: str | Path, serial: str, world_from_camera: np.ndarray) -> Path:
    """Write ``world_from_camera`` (4x4, m) for camera ``serial`` in the translation + quaternion form."""
    m = np.asarray(world_from_camera, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"world_from_camera must be 4x4, got shape {m.shape}")
    doc = {"serial": str(serial), "parent": PARENT_FRAME, "child": CHILD_FRAME,
           "translation": [float(x) for x in m[:3, 3]],
           "rotation_xyzw": [float(x) for x in matrix_to_quaternion_xyzw(m[:3, :3])]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# D435 colour optical frame in the world frame (m); handover.drivers.realsense.extrinsics\n"
                    + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path
