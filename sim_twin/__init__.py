"""handover.sim_twin: the MuJoCo twin of the cell, behind the same device interfaces as the hardware.

Offscreen rendering needs an OpenGL backend chosen before ``mujoco`` is first imported: EGL by
default (Debian: ``libegl1 libgl1-mesa-dri``; software rendering works without a GPU); set
``MUJOCO_GL=osmesa`` (``libosmesa6``) or ``glfw`` (a display) to choose another.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
