"""Offscreen pictures of the twin: PNG frames of an episode from the ``d435`` and ``overview``
cameras, and one contact sheet (a grid of frames) to look at first.

OpenGL: MuJoCo renders offscreen through EGL (``MUJOCO_GL=egl``, the default chosen here; Debian
packages ``libegl1 libgl1-mesa-dri``, software rendering works without a GPU) or OSMesa
(``MUJOCO_GL=osmesa``, package ``libosmesa6``). :func:`gl_available` says whether it works here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import mujoco  # MUJOCO_GL was chosen by handover.sim_twin's __init__
from PIL import Image

CAMERAS = ("d435", "overview")


def gl_available() -> Optional[str]:
    """None when offscreen rendering works here, else the reason it does not."""
    try:
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
        with mujoco.Renderer(model, 8, 8) as r:
            r.render()
        return None
    except Exception as exc:  # the GL backends raise assorted errors
        return f"offscreen OpenGL ({os.environ.get('MUJOCO_GL')}) unavailable: {type(exc).__name__}: {exc}"


class FrameWriter:
    """Renders the twin's current state from each camera into ``out_dir/<camera>_<step>.png``."""

    def __init__(self, model: mujoco.MjModel, out_dir: Path, width: int = 640, height: int = 480,
                 cameras: tuple[str, ...] = CAMERAS):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.renderer = mujoco.Renderer(model, height, width)
        self.cameras = cameras
        self.frames: dict[str, list[Path]] = {c: [] for c in cameras}

    def write(self, data: mujoco.MjData, step: int) -> None:
        mujoco.mj_forward(self.renderer.model, data)  # after mj_step the kinematics lag one step
        for cam in self.cameras:
            self.renderer.update_scene(data, camera=cam)
            path = self.out_dir / f"{cam}_{step:03d}.png"
            Image.fromarray(self.renderer.render()).save(path)
            self.frames[cam].append(path)

    def contact_sheet(self, columns: int = 6, every: int = 3) -> Path:
        """One PNG: a row block per camera, every ``every``-th frame, ``columns`` per row."""
        tiles = []
        for cam in self.cameras:
            tiles.extend(self.frames[cam][::every])
        if not tiles:
            raise ValueError("no frames written")
        first = Image.open(tiles[0])
        w, h = first.size[0] // 2, first.size[1] // 2
        rows = -(-len(tiles) // columns)
        sheet = Image.new("RGB", (columns * w, rows * h), (20, 20, 20))
        for i, path in enumerate(tiles):
            sheet.paste(Image.open(path).resize((w, h)), ((i % columns) * w, (i // columns) * h))
        out = self.out_dir / "contact_sheet.png"
        sheet.save(out)
        return out

    def close(self) -> None:
        self.renderer.close()
