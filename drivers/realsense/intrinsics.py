"""The intrinsics of a RealSense stream (:class:`StreamIntrinsics`): what the emulator streams and
what a capture reads back from a camera's stream profile (needs ``pyrealsense2``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyrealsense2 as rs


@dataclass(frozen=True)
class StreamIntrinsics:
    """A stream's intrinsics as librealsense has them: focal lengths and principal point in px, pixel
    centres at integer coordinates (the image centre is ((W-1)/2, (H-1)/2)); ``model`` an
    ``rs.distortion`` name and ``coeffs`` its five coefficients (default: a pinhole without
    distortion, as the emulator streams)."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str = "none"
    coeffs: tuple[float, ...] = (0.0,) * 5

    @staticmethod
    def from_rs(intr: rs.intrinsics) -> "StreamIntrinsics":
        return StreamIntrinsics(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy), float(intr.ppx),
                               float(intr.ppy), intr.model.name, tuple(float(c) for c in intr.coeffs))

    def to_rs(self) -> rs.intrinsics:
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = self.width, self.height, self.fx, self.fy, self.ppx, self.ppy
        intr.model, intr.coeffs = getattr(rs.distortion, self.model), list(self.coeffs)
        return intr

    def opencv_coeffs(self, grid: int = 24) -> tuple[tuple[float, ...], float]:
        """OpenCV distortion (k1, k2, p1, p2, k3) matching librealsense's deprojection of this
        stream, and the largest misfit (px) over a ``grid`` x ``grid`` of pixels: zeros when all
        coefficients are 0; otherwise fitted (linear least squares) to
        ``rs2_deproject_pixel_to_point``, which is what the tracker uses, whatever the model."""
        if not any(self.coeffs) or self.model == "none":
            return (0.0,) * 5, 0.0
        intr = self.to_rs()
        u, v = np.meshgrid(np.linspace(0, self.width - 1, grid), np.linspace(0, self.height - 1, grid))
        pix = np.column_stack([u.ravel(), v.ravel()])
        xy = np.array([rs.rs2_deproject_pixel_to_point(intr, [float(a), float(b)], 1.0)[:2] for a, b in pix])
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        dx, dy = (pix[:, 0] - self.ppx) / self.fx - x, (pix[:, 1] - self.ppy) / self.fy - y
        # x_d - x = x (k1 r2 + k2 r4 + k3 r6) + 2 p1 x y + p2 (r2 + 2 x2); y likewise (OpenCV's model)
        a = np.vstack([np.column_stack([x * r2, x * r2 ** 2, 2 * x * y, r2 + 2 * x * x, x * r2 ** 3]),
                       np.column_stack([y * r2, y * r2 ** 2, r2 + 2 * y * y, 2 * x * y, y * r2 ** 3])])
        k = np.linalg.lstsq(a, np.concatenate([dx, dy]), rcond=None)[0]
        err = (a @ k - np.concatenate([dx, dy])).reshape(2, -1) * np.array([[self.fx], [self.fy]])
        return tuple(float(c) for c in k), float(np.hypot(*err).max())
