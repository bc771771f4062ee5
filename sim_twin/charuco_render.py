"""ChArUco board images in the twin's D435 view, with known truth, for testing the extrinsics
calibration (:mod:`handover.calibration.extrinsics`).

The twin's ``d435`` camera renders the cell (:class:`~handover.sim_twin.d435_frames.TwinD435Frames`,
848x480, pinhole, no distortion); the board is composed into that image through the camera's exact
projection: a planar board at ``world_from_board`` (OpenCV's ChArUco board frame, see the
extrinsics module: origin at the first square's outer corner, x along squares_x, y along squares_y,
z into the board; the printed face is seen from -z) maps to the image by the homography
``K [r1 r2 t]`` of ``camera_from_board = inv(world_from_optical) @ world_from_board`` (camera: the
colour optical frame, x right, y down, z forward). The board texture is warped at ``supersample``
times the resolution and area-averaged down, so edges are anti-aliased as a real sensor integrates
them. Pixel centres are at integer coordinates (OpenCV/librealsense), so the truth is exact up to the
texture's resolution (``px_per_m``). The board occludes the scene; it casts no shadow and is lit
uniformly (it is not a MuJoCo body: the robots cannot hide it).

:func:`board_pose_facing_camera` places a board at a distance along the optical axis, turned by
given angles, as an operator would hold one in front of the camera.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from handover.calibration.extrinsics import BoardConfig, Intrinsics


def board_texture(board: BoardConfig, px_per_m: float = 4000.0) -> np.ndarray:
    """The board's printed face, grey uint8, (squares_y * square_m * px_per_m, squares_x * ...)."""
    w, h = (int(round(s * px_per_m)) for s in board.size_m)
    return board.board().generateImage((w, h), marginSize=0, borderBits=1)


def compose(background: np.ndarray, intr: Intrinsics, camera_from_board: np.ndarray, board: BoardConfig,
            px_per_m: float = 4000.0, supersample: int = 4, texture: Optional[np.ndarray] = None) -> np.ndarray:
    """``background`` (H, W, 3) RGB uint8 with the board drawn at ``camera_from_board`` (4x4, m)."""
    tex = board_texture(board, px_per_m) if texture is None else texture
    h, w = background.shape[:2]
    s = supersample
    k = intr.matrix.copy()
    k[0, 0] *= s
    k[1, 1] *= s
    k[0, 2] = (k[0, 2] + 0.5) * s - 0.5  # pixel centres stay at integer coordinates
    k[1, 2] = (k[1, 2] + 0.5) * s - 0.5
    tex_from_board = np.array([[px_per_m, 0, -0.5], [0, px_per_m, -0.5], [0, 0, 1.0]])  # texel centres at (i + 0.5) / px_per_m
    rt = camera_from_board[:3, [0, 1, 3]]
    h_img_from_tex = k @ rt @ np.linalg.inv(tex_from_board)
    big = (w * s, h * s)
    warped = cv2.warpPerspective(tex, h_img_from_tex, big, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpPerspective(np.full(tex.shape, 255, np.uint8), h_img_from_tex, big, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped = cv2.resize(warped, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255.0
    out = background.astype(np.float32) * (1 - alpha) + warped[..., None] * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def board_pose_facing_camera(world_from_camera: np.ndarray, board: BoardConfig, distance_m: float,
                             tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
                             offset_m: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``world_from_board`` (4x4, m): the board's centre ``distance_m`` along the optical axis (shifted
    by ``offset_m`` along the camera's x, y), its face towards the camera (board axes along the
    camera's), then turned by ``tilt_deg`` (rotation vector about the board centre, deg)."""
    cam_from_board = np.eye(4)
    rot = cv2.Rodrigues(np.radians(np.asarray(tilt_deg, float)).reshape(3, 1))[0]
    centre = np.array([offset_m[0], offset_m[1], distance_m])
    half = np.array([board.size_m[0] / 2, board.size_m[1] / 2, 0.0])
    cam_from_board[:3, :3] = rot
    cam_from_board[:3, 3] = centre - rot @ half
    return world_from_camera @ cam_from_board


def board_scene(cfg, tilts, board: Optional[BoardConfig] = None):
    """The twin's d435 view (the cell at its reset pose) with ``board`` (default: the default board) held
    0.85-1.05 m in front of the camera, one image per rotation in ``tilts`` (deg, see
    :func:`board_pose_facing_camera`). Returns ``(world_from_camera, stream_intrinsics, images,
    world_from_board per image)``: the truth, the camera's StreamIntrinsics, RGB uint8 images, 4x4 poses (m)."""
    from handover.sim_twin.d435_frames import TwinD435Frames

    board = board or BoardConfig()
    with TwinD435Frames.from_config(cfg) as frames:
        _, color, _ = frames()
        truth, stream = frames.world_from_optical, frames.intrinsics
    intr = Intrinsics(stream.fx, stream.fy, stream.ppx, stream.ppy)
    images, poses = [], []
    for k, tilt in enumerate(tilts):
        world_from_board = board_pose_facing_camera(truth, board, 0.85 + 0.1 * (k % 3), tilt,
                                                    (0.04 * (k % 3 - 1), 0.03 * (k % 2)))
        images.append(compose(color, intr, np.linalg.inv(truth) @ world_from_board, board))
        poses.append(world_from_board)
    return truth, stream, images, poses
