"""The emulated cell: each hardware device's emulator running on the twin node's simulation, in its
process, so that the REAL drivers talk their vendors' real protocols to it (``--backend emulated``).

Layout (one process; the twin node steps the physics in real time, every emulator reads and writes
the simulation through the twin node's lock, :class:`~handover.sim_twin.twin_node.LockedTwin`):

- xArm6 (``devices.<side>.arm.backend: xarm``): an :class:`~handover.drivers.xarm.emulator.XArmEmulator`
  per arm, TCP port 502 and the report ports on 127.0.0.2 (thrower) / 127.0.0.3 (catcher) (another
  free 127.x.y.z if that one is taken; port 502 needs root or CAP_NET_BIND_SERVICE), reports at the
  controller's 5 Hz. The driver gets that ``address``; every other xArm parameter is the config's.
- Allegro V4 (``allegro``): an :class:`~handover.drivers.allegro.emulator.AllegroEmulator` per hand on
  a python-can ``virtual`` channel of its own (``handover-emulated-<n>-<side>``: in-process only),
  streaming in real time (its thread on ``time.monotonic``), claiming the config's hand side and the
  serial ``EMU0001L`` / ``EMU0002R`` (thrower / catcher). The driver gets ``interface: virtual``, that
  channel and ``position_timeout_s`` at least :data:`ALLEGRO_POSITION_TIMEOUT_S` (0.25 s: with the
  twin, the policy and eight other device threads in one Python process, a PD thread can be
  starved for tens of ms without any frame being lost).
- D435 (``realsense``): a :class:`~handover.drivers.realsense.emulator.D435Emulator` (a librealsense
  ``software_device``) fed by :class:`~handover.sim_twin.d435_frames.TwinD435Frames` in its own
  thread (:class:`EmulatedCamera`): each frame renders a copy of the twin's state (copied under the
  lock, rendered outside it, so the physics never waits for a render). Rendering costs ~80 ms per
  depth + colour pair here (software OpenGL), so the camera is declared at :data:`CAMERA_FPS`
  (15 fps, depth and colour: a D435 mode) and really delivers what the renderer manages (~8-12 fps
  here); capture stamps are the rendered state's simulation time, so the tracker's stamps are true
  and only the frame rate and age differ from a real D435 (60 observations/s, ~30 ms old). The
  driver gets the ``software_device``, ``depth_fps``/``color_fps`` 15, a ``wall_clock`` that is the
  twin's simulation time (the emulated host's clock) and a calibration folder of its own holding the
  twin camera's true pose as ``d435_<serial>.yaml`` (never the configured folder: a real camera's
  calibration is not overwritten).

Faults are injected on the emulators (:attr:`EmulatedCell.xarm`, :attr:`allegro`, :attr:`camera`):
``xarm["thrower"].inject_error(31)`` (collision), ``allegro["catcher"].set_over_temperature()``,
``camera.emulator.drop_next(n)``, and the rest each emulator offers.

Lifecycle: :meth:`EmulatedCell.start` before the drivers configure (the emulators listen and
stream), :meth:`close` after every driver is closed.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import mujoco
import numpy as np

from handover.drivers.registry import DeviceSpecs
from handover.runtime.cell_config import CellConfig

XARM_ADDRESSES = {"thrower": "127.0.0.2", "catcher": "127.0.0.3"}
ALLEGRO_SERIALS = {"thrower": "EMU0001L", "catcher": "EMU0002R"}
ALLEGRO_POSITION_TIMEOUT_S = 0.25  # s
CAMERA_FPS = 6  # declared depth and colour rate of the emulated D435 (a D435 mode); rendered at this rate
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes (y up, -z forward) to optical (y down, z forward)
_instances = itertools.count(1)


class EmulatedCamera:
    """The emulated D435 on the twin: a ``software_device`` fed by a render thread (module doc).
    ``emulator``: the :class:`~handover.drivers.realsense.emulator.D435Emulator`; :attr:`rendered`
    frames so far, :attr:`render_s` the last render's wall time (s)."""

    def __init__(self, twin, lock: threading.RLock, serial: str, fps: int = CAMERA_FPS, width: int = 848,
                 height: int = 480):
        from handover.drivers.realsense.emulator import D435Emulator, EmulatorConfig
        from handover.drivers.realsense.intrinsics import StreamIntrinsics

        self.twin, self.lock, self.fps = twin, lock, fps
        self.width, self.height = width, height
        model = twin.model
        self.camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "d435")
        if self.camera_id < 0:
            raise ValueError("the twin's model has no camera 'd435'")
        fy = (height / 2.0) / np.tan(np.radians(model.cam_fovy[self.camera_id]) / 2.0)  # as TwinD435Frames
        self.intrinsics = StreamIntrinsics(width=width, height=height, fx=float(fy), fy=float(fy),
                                           ppx=(width - 1) / 2.0, ppy=(height - 1) / 2.0)
        self._data = mujoco.MjData(model)  # the render thread's copy of the state
        self._frames = None  # created in the render thread (its GL context is that thread's)
        self.emulator = D435Emulator(self._render, EmulatorConfig(intrinsics=self.intrinsics, serial=serial,
                                                                  depth_fps=fps, color_fps=fps))
        self.rendered = 0
        self.render_s = 0.0
        self.error = ""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_capture = -np.inf

    def world_from_optical(self) -> np.ndarray:
        """4x4 pose of the camera's optical frame in the world (m): the true extrinsics."""
        with self.lock:
            self._copy_state()
        mujoco.mj_kinematics(self.twin.model, self._data)
        mujoco.mj_camlight(self.twin.model, self._data)
        m = np.eye(4)
        m[:3, :3] = self._data.cam_xmat[self.camera_id].reshape(3, 3) @ _MJ_TO_OPTICAL
        m[:3, 3] = self._data.cam_xpos[self.camera_id]
        return m

    def start(self, timeout: float = 30.0) -> None:
        """Start the render thread; returns once its renderer exists and has rendered one frame
        (creating the GL context keeps the GIL for ~0.25 s here: it must happen before any device
        thread streams)."""
        self._thread = threading.Thread(target=self._run, name="emulated-d435", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the emulated D435's renderer did not start within {timeout} s")
        if self.error:
            raise RuntimeError(f"the emulated D435's renderer failed: {self.error}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _copy_state(self) -> None:
        d, src = self._data, self.twin.data
        d.qpos[:] = src.qpos
        d.mocap_pos[:] = src.mocap_pos
        d.mocap_quat[:] = src.mocap_quat
        d.time = src.time

    def _render(self):
        from handover.sim_twin.d435_frames import TwinD435Frames

        if self._frames is None:
            self._frames = TwinD435Frames(self.twin.model, self._data, self.width, self.height)
        return self._frames()

    def _run(self) -> None:
        period = 1.0 / self.fps
        try:
            self._render()  # the renderer and its GL context, and a first (warm-up) frame, not captured
            self._ready.set()
            while not self._stop.is_set():
                t0 = time.monotonic()
                with self.lock:
                    sim_now = float(self.twin.data.time)
                    fresh = sim_now > self._last_capture
                    if fresh:
                        self._copy_state()
                if fresh:
                    mujoco.mj_kinematics(self.twin.model, self._data)
                    mujoco.mj_camlight(self.twin.model, self._data)
                    self._last_capture = self.emulator.capture()
                    self.render_s = time.monotonic() - t0
                    self.rendered += 1
                    with self.lock:
                        sim_now = float(self.twin.data.time)
                    self.emulator.deliver(sim_now)
                self._stop.wait(max(0.005, period - (time.monotonic() - t0)))
        except Exception as exc:  # noqa: BLE001 - a dead camera shows as frames that stop (the tracker's stamps age)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()
            if self._frames is not None:
                self._frames.close()


class EmulatedCell:
    """The emulators of every hardware entry of ``specs`` on the twin node ``twin_node`` (module doc).

    After construction: :attr:`specs` (the entries with their connection replaced) and :attr:`extra`
    (constructor arguments per device) for :func:`handover.drivers.registry.build_devices`."""

    def __init__(self, twin_node, cfg: CellConfig, specs: DeviceSpecs):
        self.twin_node, self.cfg = twin_node, cfg
        self.backend = twin_node.backend  # LockedTwin: time, read_joints, set_targets under the lock
        self.xarm: dict = {}
        self.allegro: dict = {}
        self.camera: Optional[EmulatedCamera] = None
        self.extra: dict = {}
        self._calibration_dir: Optional[Path] = None
        self._instance = next(_instances)
        self.specs = specs
        try:
            for (side, group), spec in specs.entries.items():
                if spec.backend == "xarm":
                    self._add_xarm(side, spec)
                elif spec.backend == "allegro":
                    self._add_allegro(side, spec)
                elif spec.backend == "realsense":
                    self._add_camera(spec)
        except BaseException:
            self.close()
            raise

    def _add_xarm(self, side: str, spec) -> None:
        from handover.drivers.xarm.emulator import XArmEmulator
        from handover.drivers.xarm.testing import loopback_address

        index = np.array([self.cfg.joint_names.index(n) for n in getattr(self.cfg, side).arm.joints])
        address = loopback_address(XARM_ADDRESSES[side])
        self.xarm[side] = XArmEmulator(self.backend, index, address=address)
        self.specs = self.specs.replace((side, "arm"), config=dataclasses.replace(
            spec.config, address=address, source=f"{spec.config.source} (emulated: {address})"))

    def _add_allegro(self, side: str, spec) -> None:
        from handover.drivers.allegro.emulator import AllegroEmulator, EmulatedHand, allegro_joint_index

        config = spec.config
        channel = f"handover-emulated-{self._instance}-{side}"
        prefix = getattr(self.cfg, side).hand.joints[0].rsplit("joint_", 1)[0]
        hand = EmulatedHand(hand_side=config.hand_side, serial=ALLEGRO_SERIALS[side])
        self.allegro[side] = AllegroEmulator(self.backend, allegro_joint_index(self.cfg.joint_names, prefix),
                                             {"interface": "virtual", "channel": channel},
                                             device_id=config.device_id, hand=hand)
        self.specs = self.specs.replace((side, "hand"), config=dataclasses.replace(
            config, interface="virtual", channel=channel,
            position_timeout_s=max(config.position_timeout_s, ALLEGRO_POSITION_TIMEOUT_S),
            source=f"{config.source} (emulated: virtual:{channel})"))

    def _add_camera(self, spec) -> None:
        from handover.drivers.realsense.extrinsics import write_extrinsics
        from handover.drivers.realsense.config import EXTRINSICS_FILE_PATTERN

        config = spec.config
        self.camera = EmulatedCamera(self.twin_node.twin, self.twin_node.lock, config.serial)
        self._calibration_dir = Path(tempfile.mkdtemp(prefix="handover-emulated-d435-"))
        write_extrinsics(self._calibration_dir / EXTRINSICS_FILE_PATTERN.format(serial=config.serial), config.serial,
                         self.camera.world_from_optical())
        self.specs = self.specs.replace(("", "tracker"), config=dataclasses.replace(
            config, depth_fps=self.camera.fps, color_fps=self.camera.fps, calibration_dir=self._calibration_dir))
        twin_node = self.twin_node
        self.extra[("", "tracker")] = {"device": self.camera.emulator.device, "wall_clock": lambda: twin_node.sim_time}

    def start(self) -> "EmulatedCell":
        """Render (D435: its renderer first, see :meth:`EmulatedCamera.start`), listen (xArm) and
        stream (Allegro): before the drivers configure."""
        if self.camera is not None:
            self.camera.start()
        for emu in self.xarm.values():
            emu.start()
        for emu in self.allegro.values():
            emu.open()
            emu.start_streaming()
        return self

    def describe(self) -> list[str]:
        lines = [f"{side} arm: emulated xArm controller on {e.address}:502" for side, e in self.xarm.items()]
        lines += [f"{side} hand: emulated Allegro on virtual:{e.bus_kwargs['channel']}" for side, e in self.allegro.items()]
        if self.camera is not None:
            lines.append(f"tracker: emulated D435 {self.camera.emulator.config.serial} (software_device, "
                         f"{self.camera.fps} fps declared, rendered in its own thread)")
        return lines

    def close(self) -> None:
        """Stop every emulator (after the drivers are closed); each one even if another fails."""
        for close in ([e.close for e in self.xarm.values()] + [e.close for e in self.allegro.values()]
                      + ([self.camera.close] if self.camera is not None else [])):
            try:
                close()
            except Exception:  # noqa: BLE001 - the others must still close
                pass
        if self._calibration_dir is not None:
            shutil.rmtree(self._calibration_dir, ignore_errors=True)
