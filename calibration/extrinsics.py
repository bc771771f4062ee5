"""D435 extrinsics from ChArUco board images: the pose of the camera's colour optical frame in the world.

Frames (all metres):

- camera: the D435 colour *optical* frame, x right, y down, z forward along the optical axis (OpenCV's
  and librealsense's convention; the tracker's 3D points are in it);
- board: OpenCV's ChArUco board frame: origin at the outer corner of the chessboard's first square
  (top-left as the board is generated, looking at its printed face), x along ``squares_x``, y along
  ``squares_y`` (down the printed image), z = x cross y, i.e. *into* the board, away from a viewer;
- world: the cell's, z up. ``a_from_b`` maps points in frame b to frame a (4x4).

Pixels: OpenCV's convention, integer coordinates at pixel centres (librealsense's too); intrinsics
``fx, fy, ppx, ppy`` in pixels, ``coeffs`` OpenCV distortion (k1, k2, p1, p2, k3) or none.

Two modes:

- known board pose (:func:`calibrate_known_board`): ``world_from_board`` per image (one pose for all
  images, or one each); every detected corner is a known world point, and one PnP over all images'
  corners gives ``world_from_camera`` (IPPE on the image with most corners for the start, then
  OpenCV's iterative Levenberg-Marquardt PnP on all corners).
- hand-eye (:func:`calibrate_hand_eye`): the board rigidly held by a hand whose pose
  ``world_from_hand`` per image comes from forward kinematics; unknowns ``world_from_camera`` and
  ``hand_from_board``: per image PnP gives ``camera_from_board``; then the closed-form robot-world
  hand-eye solution of ``world_from_camera @ camera_from_board_i = world_from_hand_i @ hand_from_board``
  (rotations from the null space of the stacked linear system, projected on SO(3); translations by
  least squares), refined by Gauss-Newton on the reprojection error of every corner. (OpenCV 5.0's
  main build has no ``calibrateRobotWorldHandEye``; this is its Shah-style method in numpy.)

Residuals: per corner reprojection error (px) with the final pose; :func:`residual_plot` draws them.
Output: the tracker's file ``d435_<serial>.yaml`` via :func:`handover.drivers.realsense.extrinsics.write_extrinsics`.

Image sources of the command (:func:`run_cli`, exactly one):

- files: PNG/JPEG files or folders (:func:`load_images`), intrinsics from ``--intrinsics`` (required);
- the camera: :func:`images_from_camera`, colour frames of the connected D435 through the
  ``pyrealsense2`` pipeline (:func:`handover.drivers.realsense.capture.capture_color`) and the colour
  stream profile's intrinsics (librealsense's distortion as OpenCV's: :func:`intrinsics_from_camera`);
- a bag: :func:`images_from_bag`, ``sensor_msgs/msg/Image`` (rgb8, bgr8, mono8) of a rosbag2 MCAP bag
  read with :func:`handover.runtime.bag_reader.read_bag`, at most N spread evenly over it, and the
  intrinsics of its ``sensor_msgs/msg/CameraInfo`` (K, D with plumb_bob / rational_polynomial).

``--intrinsics`` overrides the camera's or the bag's. Every problem an operator can fix raises
:class:`CalibrationInputError` with one line naming the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import yaml

from handover.calibration.commands import DEFAULT_FRAMES, IMAGE_TOPIC, INFO_TOPIC
from handover.drivers.realsense.config import EXTRINSICS_FILE_PATTERN
from handover.drivers.realsense.extrinsics import write_extrinsics



class CalibrationInputError(ValueError):
    """An input (image, board, intrinsics, poses) is missing or unusable; the message names it."""


@dataclass(frozen=True)
class BoardConfig:
    """A ChArUco board: squares (count), square and marker side (m), ArUco dictionary name."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.06
    marker_m: float = 0.045
    dictionary: str = "DICT_5X5_100"

    def __post_init__(self):
        if not (self.squares_x >= 3 and self.squares_y >= 3 and 0 < self.marker_m < self.square_m):
            raise CalibrationInputError(f"board: need squares_x, squares_y >= 3 and 0 < marker_m < square_m, got {self}")
        if not hasattr(cv2.aruco, self.dictionary):
            raise CalibrationInputError(f"board.dictionary: unknown ArUco dictionary {self.dictionary!r}")

    def board(self) -> "cv2.aruco.CharucoBoard":
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour stream (px) and OpenCV distortion coefficients."""

    fx: float
    fy: float
    ppx: float
    ppy: float
    coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.ppx], [0, self.fy, self.ppy], [0, 0, 1.0]])

    @property
    def dist(self) -> np.ndarray:
        return np.asarray(self.coeffs, dtype=np.float64)


@dataclass
class Detection:
    """Corners of one image: board points (N, 3) m in the board frame, image points (N, 2) px."""

    image: str
    object_points: np.ndarray
    image_points: np.ndarray


@dataclass
class ExtrinsicsResult:
    world_from_camera: np.ndarray  # 4x4, m
    residuals_px: list[np.ndarray]  # per used image: (N,) reprojection error, px
    images: list[str]  # the images used, as residuals_px
    skipped: list[str] = field(default_factory=list)  # images without enough corners, with the reason
    hand_from_board: Optional[np.ndarray] = None  # hand-eye mode: 4x4, m

    @property
    def rms_px(self) -> float:
        e = np.concatenate(self.residuals_px)
        return float(np.sqrt((e ** 2).mean()))

    @property
    def max_px(self) -> float:
        return float(np.concatenate(self.residuals_px).max())


MIN_CORNERS = 6


def detect(image: np.ndarray, board: BoardConfig, name: str = "image") -> Optional[Detection]:
    """ChArUco corners in an RGB/BGR/grey image (subpixel, OpenCV's detector); None if fewer than
    :data:`MIN_CORNERS`."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    b = board.board()
    corners, ids, _, _ = cv2.aruco.CharucoDetector(b).detectBoard(grey)
    if ids is None or len(ids) < MIN_CORNERS:
        return None
    obj, img = b.matchImagePoints(corners, ids)
    return Detection(name, obj.reshape(-1, 3).astype(np.float64), img.reshape(-1, 2).astype(np.float64))


def _pose(rvec, tvec) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]
    m[:3, 3] = np.ravel(tvec)
    return m


def _transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:3, :3].T + m[:3, 3]


def _project(camera_from_x: np.ndarray, pts: np.ndarray, intr: Intrinsics) -> np.ndarray:
    rvec = cv2.Rodrigues(camera_from_x[:3, :3])[0]
    return cv2.projectPoints(pts.reshape(-1, 1, 3), rvec, camera_from_x[:3, 3].copy(), intr.matrix, intr.dist)[0].reshape(-1, 2)


def camera_from_board(det: Detection, intr: Intrinsics) -> np.ndarray:
    """Per-image PnP (planar IPPE, then LM refinement): the board in the camera frame, 4x4 m."""
    ok, rvec, tvec = cv2.solvePnP(det.object_points, det.image_points, intr.matrix, intr.dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationInputError(f"{det.image}: PnP failed")
    rvec, tvec = cv2.solvePnPRefineLM(det.object_points, det.image_points, intr.matrix, intr.dist, rvec, tvec)
    return _pose(rvec, tvec)


def calibrate_known_board(detections: Sequence[Detection], intr: Intrinsics,
                          world_from_board: np.ndarray | Sequence[np.ndarray]) -> ExtrinsicsResult:
    """Camera pose from images of a board at known world poses (one 4x4 for all, or one per image)."""
    if not detections:
        raise CalibrationInputError("no image with a detected ChArUco board")
    poses = [np.asarray(world_from_board, float)] * len(detections) if np.ndim(world_from_board) == 2 \
        else [np.asarray(p, float) for p in world_from_board]
    if len(poses) != len(detections):
        raise CalibrationInputError(f"{len(poses)} board poses for {len(detections)} images")
    world = np.concatenate([_transform(p, d.object_points) for p, d in zip(poses, detections)])
    image = np.concatenate([d.image_points for d in detections])
    # Start: the per-image PnP of the image with the most corners.
    first = max(range(len(detections)), key=lambda i: len(detections[i].image_points))
    cam_from_world0 = camera_from_board(detections[first], intr) @ np.linalg.inv(poses[first])
    rvec = cv2.Rodrigues(cam_from_world0[:3, :3])[0]
    # (solvePnPRefineLM on the stacked non-planar points drifted away from the optimum here; the
    # iterative solver from the same guess converges.)
    ok, rvec, tvec = cv2.solvePnP(world, image, intr.matrix, intr.dist, rvec, cam_from_world0[:3, 3].reshape(3, 1).copy(),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise CalibrationInputError("PnP over all images failed")
    cam_from_world = _pose(rvec, tvec)
    residuals = [np.linalg.norm(_project(cam_from_world, _transform(p, d.object_points), intr) - d.image_points, axis=1)
                 for p, d in zip(poses, detections)]
    return ExtrinsicsResult(np.linalg.inv(cam_from_world), residuals, [d.image for d in detections])


def _project_so3(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    return r if np.linalg.det(r) > 0 else u @ np.diag([1, 1, -1]) @ vt


def _twist(m: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``m`` moved by a small (rotation vector, translation) ``delta`` (6,) applied on the left."""
    out = m.copy()
    out[:3, :3] = cv2.Rodrigues(delta[:3].reshape(3, 1))[0] @ m[:3, :3]
    out[:3, 3] = m[:3, 3] + delta[3:]
    return out


def calibrate_hand_eye(detections: Sequence[Detection], intr: Intrinsics, world_from_hand: Sequence[np.ndarray],
                       iterations: int = 10) -> ExtrinsicsResult:
    """Camera pose and board-on-hand pose from images of a board held by a hand (module doc)."""
    if len(detections) < 3:
        raise CalibrationInputError(f"hand-eye needs at least 3 images with the board, got {len(detections)}")
    if len(world_from_hand) != len(detections):
        raise CalibrationInputError(f"{len(world_from_hand)} hand poses for {len(detections)} images")
    hands = [np.asarray(h, float) for h in world_from_hand]
    cbs = [camera_from_board(d, intr) for d in detections]
    # Rotations: R_X A_i - B_i R_Y = 0 with A = R(camera_from_board), B = R(world_from_hand), X = world_from_camera,
    # Y = hand_from_board; row-major vec: vec(R_X A) = (I kron A^T) vec(R_X), vec(B R_Y) = (B kron I) vec(R_Y).
    rows = [np.hstack([np.kron(np.eye(3), c[:3, :3].T), -np.kron(h[:3, :3], np.eye(3))]) for c, h in zip(cbs, hands)]
    _, _, vt = np.linalg.svd(np.vstack(rows))
    v = vt[-1]
    rx, ry = v[:9].reshape(3, 3), v[9:].reshape(3, 3)
    scale = np.cbrt(np.linalg.det(rx))
    rx, ry = _project_so3(rx / scale), _project_so3(ry / scale)
    # Translations: R_X t_c + t_X = R_h t_Y + t_h.
    a = np.vstack([np.hstack([np.eye(3), -h[:3, :3]]) for h in hands])
    b = np.concatenate([h[:3, 3] - rx @ c[:3, 3] for c, h in zip(cbs, hands)])
    t = np.linalg.lstsq(a, b, rcond=None)[0]
    x, y = np.eye(4), np.eye(4)
    x[:3, :3], x[:3, 3], y[:3, :3], y[:3, 3] = rx, t[:3], ry, t[3:]

    def residual(x_, y_):
        cam_from_world = np.linalg.inv(x_)
        return np.concatenate([(_project(cam_from_world @ h @ y_, d.object_points, intr) - d.image_points).ravel()
                               for h, d in zip(hands, detections)])

    r0 = residual(x, y)
    lam = 1e-3
    for _ in range(iterations):  # Gauss-Newton / LM on 12 parameters, numerical Jacobian
        jac = np.empty((r0.size, 12))
        for k in range(12):
            e = np.zeros(12)
            e[k] = 1e-6
            jac[:, k] = (residual(_twist(x, e[:6]), _twist(y, e[6:])) - r0) / 1e-6
        a_ = jac.T @ jac
        step = -np.linalg.solve(a_ + lam * np.diag(np.diag(a_)), jac.T @ r0)
        x1, y1 = _twist(x, step[:6]), _twist(y, step[6:])
        r1 = residual(x1, y1)
        if r1 @ r1 < r0 @ r0:
            x, y, r0, lam = x1, y1, r1, lam / 3
            if np.abs(step).max() < 1e-10:
                break
        else:
            lam *= 10
    res = [np.linalg.norm(r.reshape(-1, 2), axis=1)
           for r in np.split(r0, np.cumsum([2 * len(d.image_points) for d in detections])[:-1])]
    return ExtrinsicsResult(x, res, [d.image for d in detections], hand_from_board=y)


def residual_plot(result: ExtrinsicsResult, path: str | Path) -> Path:
    """PNG: per image, the reprojection error of each corner (px), and its histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(result.residuals_px):
        a.plot(np.full(len(r), i) + np.linspace(-0.3, 0.3, len(r)), r, ".", ms=3)
    a.set_xticks(range(len(result.images)), [Path(n).name for n in result.images], rotation=60, fontsize=7)
    a.set_ylabel("reprojection error (px)")
    a.set_title(f"per corner, RMS {result.rms_px:.3f} px, max {result.max_px:.3f} px")
    b.hist(np.concatenate(result.residuals_px), bins=30)
    b.set_xlabel("reprojection error (px)")
    b.set_ylabel("corners")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_result(result: ExtrinsicsResult, calibration_dir: str | Path, serial: str) -> tuple[Path, Path]:
    """The tracker's ``d435_<serial>.yaml`` and ``d435_<serial>_residuals.png`` in ``calibration_dir``."""
    out = Path(calibration_dir) / EXTRINSICS_FILE_PATTERN.format(serial=serial)
    write_extrinsics(out, serial, result.world_from_camera)
    return out, residual_plot(result, out.with_name(out.stem + "_residuals.png"))


def pose_error(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(translation error m, rotation error deg) between two 4x4 poses."""
    dt = float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3]))
    c = (np.trace(estimate[:3, :3].T @ truth[:3, :3]) - 1) / 2
    return dt, float(np.degrees(np.arccos(np.clip(c, -1, 1))))


# -- CLI support ------------------------------------------------------------------------------------


def _read_yaml(path: Path, what: str) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CalibrationInputError(f"{path}: cannot read the {what}: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise CalibrationInputError(f"{path}: the {what} must be a mapping (got {raw!r})")
    return raw


def _matrix(path: Path, raw, key: str) -> np.ndarray:
    m = np.asarray(raw, dtype=float) if raw is not None else None
    if m is None or m.shape[-2:] != (4, 4) or not np.isfinite(m).all():
        raise CalibrationInputError(f"{path}: {key}: expected 4x4 matrices of finite numbers")
    return m


def load_images(paths: Sequence[Path]) -> list[tuple[str, np.ndarray]]:
    """Image files (PNG/JPEG) and folders of them (sorted), as grey images named by their path."""
    files: list[Path] = []
    for p in paths:
        files += sorted(q for q in Path(p).iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg")) if Path(p).is_dir() else [Path(p)]
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise CalibrationInputError(f"{f}: not a readable image")
        out.append((str(f), img))
    if not out:
        raise CalibrationInputError(f"no images in {[str(p) for p in paths]}")
    return out


def load_intrinsics(path: Path) -> Intrinsics:
    """An intrinsics file: YAML/JSON ``{fx, fy, ppx, ppy[, coeffs]}`` (px, OpenCV coefficients)."""
    raw = _read_yaml(path, "intrinsics")
    try:
        return Intrinsics(**{k: (tuple(v) if k == "coeffs" else float(v)) for k, v in raw.items()})
    except (TypeError, ValueError) as exc:
        raise CalibrationInputError(f"{path}: intrinsics: expected fx, fy, ppx, ppy[, coeffs]: {exc}") from None


# -- images from a bag ------------------------------------------------------------------------------

IMAGE_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
_OPENCV_MODELS = ("plumb_bob", "rational_polynomial", "")  # CameraInfo.distortion_model values OpenCV's model covers


def _decode_image(msg, name: str) -> np.ndarray:
    """A ``sensor_msgs/Image`` (rgb8, bgr8, mono8) as RGB (H, W, 3) or grey (H, W) uint8."""
    if not all(hasattr(msg, a) for a in ("encoding", "height", "width", "step", "data")):
        raise CalibrationInputError(f"{name}: not a sensor_msgs/msg/Image (compressed images are not supported)")
    channels = IMAGE_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise CalibrationInputError(f"{name}: image encoding {msg.encoding!r} is not supported "
                                    f"(expected one of {', '.join(IMAGE_ENCODINGS)})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if h < 1 or w < 1 or step < w * channels or data.size < h * step:
        raise CalibrationInputError(f"{name}: image of {w}x{h} {msg.encoding}, step {step}, has {data.size} bytes")
    img = data[:h * step].reshape(h, step)[:, :w * channels].reshape((h, w, channels) if channels > 1 else (h, w))
    return np.ascontiguousarray(img[..., ::-1] if msg.encoding == "bgr8" else img)


def _camera_info_intrinsics(msg, name: str, size: tuple[int, int]) -> Intrinsics:
    if not all(hasattr(msg, a) for a in ("k", "d", "distortion_model", "width", "height")):
        raise CalibrationInputError(f"{name}: not a sensor_msgs/msg/CameraInfo")
    k = np.asarray(msg.k, dtype=float).ravel()
    d = tuple(float(c) for c in np.asarray(msg.d, dtype=float).ravel())
    if k.size != 9 or not np.isfinite(k).all() or k[0] <= 0 or k[4] <= 0:
        raise CalibrationInputError(f"{name}: K {k.tolist()} is not a camera matrix (an uncalibrated camera?): "
                                    "give --intrinsics FILE")
    if msg.distortion_model not in _OPENCV_MODELS or len(d) not in (0, 4, 5, 8, 12, 14):
        raise CalibrationInputError(f"{name}: distortion model {msg.distortion_model!r} with {len(d)} coefficients is "
                                    "not OpenCV's (plumb_bob or rational_polynomial): give --intrinsics FILE")
    if msg.width and msg.height and (int(msg.width), int(msg.height)) != size:
        raise CalibrationInputError(f"{name}: camera info for {msg.width}x{msg.height} images, the images are "
                                    f"{size[0]}x{size[1]}")
    return Intrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), d or (0.0,) * 5)


def images_from_bag(path, image_topic: str = IMAGE_TOPIC, info_topic: str = INFO_TOPIC,
                    frames: int = DEFAULT_FRAMES) -> tuple[list[tuple[str, np.ndarray]], Optional[Intrinsics]]:
    """At most ``frames`` images of ``image_topic`` (``sensor_msgs/Image``) spread evenly over a
    rosbag2 MCAP bag (folder or .mcap), named ``<topic>@<s from the first>s``, and the intrinsics of
    the last ``sensor_msgs/CameraInfo`` on ``info_topic`` (None if the bag has none)."""
    from handover.runtime.bag_reader import read_bag
    from handover.runtime.errors import InputError

    try:
        bag = read_bag(path, topics=[image_topic, info_topic])
    except InputError as exc:
        raise CalibrationInputError(str(exc)) from None
    msgs = bag.topic(image_topic)
    if not msgs:
        images = sorted(t for t, kind in bag.types.items() if kind == "sensor_msgs/msg/Image")
        raise CalibrationInputError(f"{path}: no images on {image_topic}; the bag's image topics: "
                                    f"{', '.join(images) or 'none'} (choose one with --image-topic)")
    t0 = msgs[0].log_time_ns
    pick = np.unique(np.round(np.linspace(0, len(msgs) - 1, min(frames, len(msgs)))).astype(int))
    out = []
    for i in pick:
        name = f"{image_topic}@{(msgs[i].log_time_ns - t0) * 1e-9:.2f}s"
        out.append((name, _decode_image(msgs[i].msg, f"{path}: {name}")))
    infos = bag.topic(info_topic)
    size = out[0][1].shape[1::-1]
    intr = _camera_info_intrinsics(infos[-1].msg, f"{path}: {info_topic}", size) if infos else None
    return out, intr


# -- images from the camera -------------------------------------------------------------------------

MAX_COEFFS_MISFIT_PX = 0.05  # librealsense distortion as OpenCV's: largest misfit over the image


def images_from_camera(serial: str, frames: int, interval_s: float, **capture_options
                       ) -> tuple[list[tuple[str, np.ndarray]], Intrinsics]:
    """``frames`` colour images of the connected D435 ``serial`` through the pipeline
    (:func:`handover.drivers.realsense.capture.capture_color`), named ``camera<k>``, and the colour
    stream's intrinsics (librealsense distortion converted to OpenCV's)."""
    try:
        from handover.drivers.realsense import capture
    except ImportError as exc:
        raise CalibrationInputError(f"--from-camera needs pyrealsense2 (pip install 'handover[hardware]'): {exc}") from None
    try:
        cap = capture.capture_color(serial, frames, interval_s, **capture_options)
    except capture.CaptureError as exc:
        raise CalibrationInputError(str(exc)) from None
    return [(f"camera{k:02d}", img) for k, img in enumerate(cap.images)], intrinsics_from_camera(cap.intrinsics)


def intrinsics_from_camera(ci) -> Intrinsics:
    """:class:`Intrinsics` of a :class:`~handover.drivers.realsense.intrinsics.StreamIntrinsics`."""
    coeffs, misfit = ci.opencv_coeffs()
    if misfit > MAX_COEFFS_MISFIT_PX:
        raise CalibrationInputError(f"the camera's {ci.model} distortion {ci.coeffs} is not OpenCV's (fits within "
                                    f"{misfit:.2f} px): give --intrinsics FILE")
    return Intrinsics(ci.fx, ci.fy, ci.ppx, ci.ppy, coeffs)


# -- the command ------------------------------------------------------------------------------------

def _load_hand_poses(path: Path) -> np.ndarray:
    if path.suffix != ".npz":
        return _matrix(path, _read_yaml(path, "hand poses").get("world_from_hand"), "world_from_hand")
    try:
        with np.load(path) as z:
            raw = z["world_from_hand"] if "world_from_hand" in z else None
    except Exception as exc:  # noqa: BLE001 - missing, not a zip, truncated, pickled: all unreadable
        raise CalibrationInputError(f"{path}: cannot read the hand poses: {' '.join(str(exc).split())}") from None
    return _matrix(path, raw, "world_from_hand")


def _check_source(args) -> str:
    """The one image source of the command ("files", "camera", "bag"), its options only with it."""
    given = {"files": bool(args.images), "camera": bool(args.from_camera), "bag": args.bag is not None}
    words = {"files": "image files", "camera": "--from-camera", "bag": "--bag"}
    chosen = [k for k, v in given.items() if v]
    if len(chosen) != 1:
        got = " and ".join(words[k] for k in chosen) or "none"
        raise CalibrationInputError(f"give exactly one image source: image files/folders, --from-camera or --bag BAG (got {got})")
    source = chosen[0]
    only = {"--frames": ("camera", "bag"), "--interval": ("camera",), "--image-topic": ("bag",), "--info-topic": ("bag",)}
    for opt, sources in only.items():
        if getattr(args, opt[2:].replace("-", "_"), None) is not None and source not in sources:
            raise CalibrationInputError(f"{opt} is for {' and '.join(words[s] for s in sources)}, not with {words[source]}")
    if args.intrinsics is None and source == "files":
        raise CalibrationInputError("image files need --intrinsics FILE (the colour stream's fx, fy, ppx, ppy[, coeffs])")
    return source


def run_cli(args) -> dict:
    """``handover calibrate extrinsics`` (see :mod:`handover.calibration.commands`): one image
    source (image files, ``--from-camera``, ``--bag``); intrinsics from ``--intrinsics`` if given,
    else from the source (the colour stream's profile, the bag's CameraInfo). Every input file is
    read before the camera is used."""
    source = _check_source(args)
    intr = load_intrinsics(args.intrinsics) if args.intrinsics is not None else None
    board = BoardConfig(**_read_yaml(args.board, "board")) if args.board else BoardConfig()
    board_pose = hands = None
    if args.board_pose:
        board_pose = _matrix(args.board_pose, _read_yaml(args.board_pose, "board pose").get("matrix"), "matrix")
    else:
        hands = _load_hand_poses(args.hand_poses)
    frames = args.frames if args.frames is not None else DEFAULT_FRAMES
    if hands is not None and source == "camera" and len(hands) != frames:
        raise CalibrationInputError(f"{args.hand_poses}: {len(hands)} hand poses for {frames} frames (--frames): one per image, in order")
    if source == "files":
        images = load_images(args.images)
    elif source == "bag":
        images, bag_intr = images_from_bag(args.bag, args.image_topic or IMAGE_TOPIC, args.info_topic or INFO_TOPIC, frames)
        if intr is None and bag_intr is None:
            raise CalibrationInputError(f"{args.bag}: no CameraInfo on {args.info_topic or INFO_TOPIC}: give --intrinsics FILE "
                                        "(or the info topic with --info-topic)")
        intr = intr or bag_intr
    else:
        images, cam_intr = images_from_camera(args.serial, frames, args.interval or 0.0)
        intr = intr or cam_intr
    if hands is not None and len(hands) != len(images):
        raise CalibrationInputError(f"{args.hand_poses}: {len(hands)} hand poses for {len(images)} images: one per image, in order")
    if board_pose is not None and board_pose.ndim == 3 and len(board_pose) != len(images):
        raise CalibrationInputError(f"{args.board_pose}: {len(board_pose)} board poses for {len(images)} images: one, or one per image")
    dets, skipped, found = [], [], []
    for name, img in images:
        d = detect(img, board, name)
        (dets.append(d) if d else skipped.append(name))
        found.append(d is not None)
    if board_pose is not None:
        if board_pose.ndim == 3:  # one per image: those of the images with a board
            board_pose = [p for p, ok in zip(board_pose, found) if ok]
        result = calibrate_known_board(dets, intr, board_pose)
    else:
        if skipped:
            raise CalibrationInputError(f"hand-eye: no board found in {skipped}; remove them and their hand poses")
        result = calibrate_hand_eye(dets, intr, list(hands))
    result.skipped = skipped
    path, plot = write_result(result, args.out, args.serial)
    return {"file": str(path), "plot": str(plot), "source": source, "images_used": len(result.images), "skipped": skipped,
            "intrinsics": {"fx": intr.fx, "fy": intr.fy, "ppx": intr.ppx, "ppy": intr.ppy, "coeffs": list(intr.coeffs)},
            "rms_px": result.rms_px, "max_px": result.max_px, "world_from_camera": result.world_from_camera.tolist()}
