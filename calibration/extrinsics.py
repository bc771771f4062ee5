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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import yaml

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


def run_cli(args) -> dict:
    """``handover calibrate extrinsics`` (see :mod:`handover.calibration.commands`)."""
    raw = _read_yaml(args.intrinsics, "intrinsics")
    try:
        intr = Intrinsics(**{k: (tuple(v) if k == "coeffs" else float(v)) for k, v in raw.items()})
    except (TypeError, ValueError) as exc:
        raise CalibrationInputError(f"{args.intrinsics}: intrinsics: expected fx, fy, ppx, ppy[, coeffs]: {exc}") from None
    board = BoardConfig(**_read_yaml(args.board, "board")) if args.board else BoardConfig()
    dets, skipped = [], []
    for name, img in load_images(args.images):
        d = detect(img, board, name)
        (dets.append(d) if d else skipped.append(name))
    if args.board_pose:
        result = calibrate_known_board(dets, intr, _matrix(args.board_pose, _read_yaml(args.board_pose, "board pose").get("matrix"), "matrix"))
    else:
        if args.hand_poses.suffix == ".npz":
            with np.load(args.hand_poses) as z:
                hands = _matrix(args.hand_poses, z["world_from_hand"] if "world_from_hand" in z else None, "world_from_hand")
        else:
            hands = _matrix(args.hand_poses, _read_yaml(args.hand_poses, "hand poses").get("world_from_hand"), "world_from_hand")
        if skipped:
            raise CalibrationInputError(f"hand-eye: no board found in {skipped}; remove them and their hand poses")
        result = calibrate_hand_eye(dets, intr, list(hands))
    result.skipped = skipped
    path, plot = write_result(result, args.out, args.serial)
    return {"file": str(path), "plot": str(plot), "images_used": len(result.images), "skipped": skipped,
            "rms_px": result.rms_px, "max_px": result.max_px, "world_from_camera": result.world_from_camera.tolist()}
