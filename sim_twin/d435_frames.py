"""The twin's D435: depth and colour images rendered from the model's ``d435`` camera, as a frame
source for :class:`~handover.drivers.realsense.emulator.D435Emulator`.

- Images: ``width`` x ``height`` (848x480, the tracker's mode) with MuJoCo's offscreen renderer
  (``MUJOCO_GL``, see :mod:`handover.sim_twin.render`); colour (H, W, 3) uint8 RGB; depth (H, W)
  float32 in m along the optical axis (MuJoCo's depth render is the linearised z-buffer, which is
  what a D435's Z16 measures), 0 where nothing is nearer than ``max_depth_m`` (no data). No
  shadows (they cost ~6x the rest of a software-rendered frame and only make detection harder).
- Capture time: the simulation time ``data.time`` (s) of the rendered state.
- Intrinsics (:attr:`intrinsics`): a pinhole without distortion: fy = (H/2) / tan(fovy/2), fx = fy
  (square pixels), principal point at the image centre ((W-1)/2, (H-1)/2) in librealsense's
  pixel-centre convention.
- Pose (:attr:`world_from_optical`): the camera in the world frame (m) with librealsense's optical
  axes (x right, y down, z forward); MuJoCo's camera looks along -z with y up, so the optical frame
  is the MuJoCo camera frame turned by pi about its x axis. This is the ground truth of the
  tracker's extrinsics file (:func:`write_calibration`).

The frame source reads the state it is given (a running twin's ``model``/``data``, or its own copy
built from a cell config; :meth:`set_object` places the object there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import mujoco
import numpy as np

from handover.drivers.realsense.config import EXTRINSICS_FILE_PATTERN
from handover.drivers.realsense.intrinsics import StreamIntrinsics
from handover.drivers.realsense.extrinsics import write_extrinsics
from handover.runtime.cell_config import CellConfig
from handover.sim_twin.model import build_model

CAMERA = "d435"
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


class TwinD435Frames:
    """Renders the twin's ``d435`` camera (module doc). Call it for one frame:
    ``depth_m, color, capture_time = frames()``. Close it (or use ``with``) to free the GL context."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, width: int = 848, height: int = 480,
                 camera: str = CAMERA, max_depth_m: float = 10.0):
        self.model, self.data = model, data
        self.camera = camera
        self.camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self.camera_id < 0:
            raise ValueError(f"the twin's model has no camera {camera!r}")
        self.max_depth_m = float(max_depth_m)
        fy = (height / 2.0) / np.tan(np.radians(model.cam_fovy[self.camera_id]) / 2.0)
        self.intrinsics = StreamIntrinsics(width=width, height=height, fx=float(fy), fy=float(fy),
                                           ppx=(width - 1) / 2.0, ppy=(height - 1) / 2.0)
        self._color = mujoco.Renderer(model, height, width)
        self._depth = mujoco.Renderer(model, height, width)
        self._depth.enable_depth_rendering()
        for renderer in (self._color, self._depth):  # shadow maps cost ~290 of ~350 ms per colour frame here
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._object_qpos = int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "object")])

    @staticmethod
    def from_config(cfg: CellConfig, width: int = 848, height: int = 480) -> "TwinD435Frames":
        """A frame source with its own model and state of the cell (the object at its start)."""
        model = build_model(cfg)
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        return TwinD435Frames(model, data, width, height)

    @property
    def world_from_optical(self) -> np.ndarray:
        """4x4 pose of the camera's optical frame in the world (m), from the current state."""
        mujoco.mj_kinematics(self.model, self.data)
        m = np.eye(4)
        m[:3, :3] = self.data.cam_xmat[self.camera_id].reshape(3, 3) @ _MJ_TO_OPTICAL
        m[:3, 3] = self.data.cam_xpos[self.camera_id]
        return m

    def set_object(self, position, quat_wxyz=(1.0, 0.0, 0.0, 0.0)) -> None:
        """Place the object (centre, m, world; orientation w x y z) and update the kinematics."""
        a = self._object_qpos
        self.data.qpos[a:a + 3] = position
        self.data.qpos[a + 3:a + 7] = quat_wxyz
        mujoco.mj_kinematics(self.model, self.data)

    def __call__(self) -> tuple[np.ndarray, np.ndarray, float]:
        self._color.update_scene(self.data, camera=self.camera)
        color = self._color.render()
        self._depth.update_scene(self.data, camera=self.camera)
        depth = self._depth.render().astype(np.float32)
        depth[~(depth < self.max_depth_m)] = 0.0
        return depth, color, float(self.data.time)

    def close(self) -> None:
        self._color.close()
        self._depth.close()

    def __enter__(self) -> "TwinD435Frames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_calibration(frames: TwinD435Frames, calibration_dir: str | Path, serial: str,
                      world_from_optical: Optional[np.ndarray] = None) -> Path:
    """Write the twin camera's true extrinsics as the tracker's calibration file for ``serial``."""
    pose = frames.world_from_optical if world_from_optical is None else world_from_optical
    return write_extrinsics(Path(calibration_dir) / EXTRINSICS_FILE_PATTERN.format(serial=serial), serial, pose)
