"""The cell in IsaacGym (Preview 4, ``isaacgym.gymapi``), behind the same device interfaces as the
MuJoCo twin, for users who have IsaacGym.

IsaacGym is not on PyPI (NVIDIA's download, Python 3.6-3.8 only), so it is imported lazily: this
module imports without it, and :class:`IsaacGymTwin` raises :class:`ImportError` with a clear
message when it is missing. IsaacGym refuses to load once ``torch`` has been imported: create the
twin (or ``import isaacgym``) before anything imports torch.

The scene (one sim, one env, env frame = the cell's world frame, z up, m, rad, s, kg):

- the two robots from :mod:`handover.sim_twin.urdf` (the same kinematics, masses and collision
  shapes as the MuJoCo twin), fixed at their base pose and yaw, actors ``thrower`` and
  ``catcher``; gravity disabled on them (``disable_gravity``: the xArm controller and the Allegro
  driver compensate gravity, like ``gravcomp`` in the MuJoCo twin); every DOF in
  ``DOF_MODE_POS`` with the contract's gains from ``cfg.twin`` (arm stiffness/damping/effort per
  joint, hand stiffness 30, damping 1, effort 5) and velocity limits 3.14 rad/s (arm) and
  3.0 rad/s (hand);
- a pedestal box under each arm base, a ground plane, and the object: ``cfg.twin.object``
  (cube: ``create_box``, sphere: ``create_sphere``, cylinder: a URDF cylinder of radius ``size``
  and height ``2 * size`` -- IsaacGym has no cylinder primitive, and a capsule of that height
  would be a sphere) with its nominal mass and friction, starting at ``cfg.object.start_position``.
- Collisions: robots and pedestals share filter bit 1 (no robot self-collisions, no robot-robot
  or robot-pedestal contacts), the object has filter 0 and touches everything, like the MuJoCo
  twin's contact bits.

Time: the original environment's rates. ``SimParams.dt`` is a third of the control period
(``controlFrequencyInv: 3``) with 2 substeps, so PhysX steps 1/360 s, the MuJoCo twin's timestep.
:attr:`IsaacGymTwin.time` counts physics steps since the last :meth:`~IsaacGymTwin.reset` (the
MuJoCo twin's clock also restarts at 0).

State access uses the CPU pipeline's per-actor numpy API (``get_actor_dof_states``,
``set_actor_dof_position_targets``, ``get_actor_rigid_body_states``, ...) on the PhysX CPU or GPU
solver (``device``); every DOF is found by name (``find_actor_dof_index``), never by position.
Efforts are PhysX's DOF forces (``enable_actor_dof_force_sensors`` + ``get_actor_dof_forces``:
the joint force along each DOF, drive and constraint forces together), provided only when PhysX
accepts the force sensors.
"""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from handover.runtime.cell_config import CellConfig
from handover.sim_twin.camera_model import CameraModel
from handover.sim_twin.model import home_qpos
from handover.sim_twin.devices import GROUPS, TwinDevices
from handover.sim_twin.twin import EpisodeParams
from handover.sim_twin.urdf import (
    ARM_VELOCITY_LIMIT,
    HAND_VELOCITY_LIMIT,
    SIDES,
    object_urdf,
    urdf_joint_name,
    write_urdfs,
)

ISAACGYM_MISSING = "IsaacGym is not installed (Python 3.8 only, from NVIDIA's site); use the MuJoCo twin"


STEPS_PER_CONTROL = 3  # simulate() calls per control period (the original's controlFrequencyInv)
SUBSTEPS = 2  # PhysX substeps per simulate() (the original's sim.substeps)
ROBOT_FILTER = 1  # collision filter bit of robots and pedestals; the object has 0
PEDESTAL_HALF_SIDE = 0.12  # m, as in the MuJoCo twin
OBJECT_RGB = (0.95, 0.45, 0.1)


def import_gymapi():
    """``isaacgym.gymapi``, or an :class:`ImportError` that says what to do."""
    try:
        return importlib.import_module("isaacgym.gymapi")
    except ModuleNotFoundError as exc:
        if exc.name in ("isaacgym", "isaacgym.gymapi"):
            raise ImportError(ISAACGYM_MISSING) from exc
        raise ImportError(f"IsaacGym is installed but cannot be imported: {exc}") from exc
    except ImportError as exc:  # e.g. "PyTorch was imported before isaacgym modules", libpython3.8 missing
        hint = " (create the IsaacGym twin before anything imports torch)" if "torch" in str(exc).lower() else ""
        raise ImportError(f"IsaacGym is installed but cannot be imported: {exc}{hint}") from exc


def parse_device(device: str) -> Tuple[int, bool]:
    """``"cpu"`` -> (0, PhysX on the CPU); ``"cuda"`` / ``"cuda:N"`` -> (N, PhysX on GPU N)."""
    if device == "cpu":
        return 0, False
    if device == "cuda":
        return 0, True
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:]), True
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _yaw_quat(gymapi, yaw: float):
    """Rotation about world z as an IsaacGym quaternion (x, y, z, w)."""
    return gymapi.Quat(0.0, 0.0, float(np.sin(yaw / 2.0)), float(np.cos(yaw / 2.0)))


def _nominal_object_inertia(shape: str, size: float, mass: float) -> np.ndarray:
    """Principal inertia (kg*m^2) of the nominal solid object about its centre (axes x, y, z)."""
    if shape == "sphere":
        return np.full(3, 0.4 * mass * size**2)
    if shape == "cube":  # side 2 * size
        return np.full(3, mass * 8.0 * size**2 / 12.0)
    # cylinder: radius size, height 2 * size, axis z
    transverse = mass * (3.0 * size**2 + (2.0 * size) ** 2) / 12.0
    return np.array([transverse, transverse, 0.5 * mass * size**2])


@dataclass
class _Robot:
    """One robot actor: its handle, the actor DOF index of each of the side's 22 joints (contract
    order), and the full position-target array that is sent to IsaacGym."""

    side: str
    handle: int
    dof: np.ndarray  # (22,) actor-domain DOF index per contract joint
    targets: np.ndarray  # (num_dofs,) float32, actor DOF order
    hand: np.ndarray  # actor DOF indices of the 16 hand joints


class IsaacGymTwin:
    """The whole cell in one IsaacGym sim; the public surface of :class:`~handover.sim_twin.twin.Twin`.

    ``device``: ``"cpu"`` or ``"cuda[:N]"`` (PhysX solver device). ``headless=False`` opens a viewer
    looking from the ``overview`` camera. Call :meth:`close` (or use ``with``) to free the sim.
    """

    name = "isaacgym"  # device names: isaacgym/thrower/arm, ...

    def __init__(self, cfg: CellConfig, seed: int = 0, headless: bool = True, device: str = "cpu"):
        compute_device, use_gpu = parse_device(device)
        gymapi = import_gymapi()
        self.gymapi = gymapi
        self.cfg = cfg
        self.device = device
        self.headless = headless
        self.joint_names = cfg.joint_names
        self.steps_per_control = STEPS_PER_CONTROL
        self.physics_dt = cfg.control_period_s / STEPS_PER_CONTROL
        self.gym = gymapi.acquire_gym()
        self.sim = None
        self.viewer = None
        self._assets_dir = tempfile.TemporaryDirectory(prefix="handover_isaacgym_")
        try:
            self._create_sim(compute_device, use_gpu)
            self._create_scene()
            self.gym.prepare_sim(self.sim)
            if not headless:
                self._create_viewer()
        except BaseException:
            self.close()
            raise
        self._steps = 0
        self.camera = CameraModel(cfg.twin.tracker, seed=seed)
        self.params = EpisodeParams()
        self.episode = 0
        self.reset()

    # -- construction -----------------------------------------------------------------------------

    def _create_sim(self, compute_device: int, use_gpu: bool) -> None:
        gymapi, gym = self.gymapi, self.gym
        sp = gymapi.SimParams()
        sp.dt = self.physics_dt
        sp.substeps = SUBSTEPS
        sp.up_axis = gymapi.UP_AXIS_Z
        sp.gravity = gymapi.Vec3(0.0, 0.0, -9.81)
        sp.use_gpu_pipeline = False  # per-actor numpy API; the solver may still run on the GPU
        sp.physx.use_gpu = use_gpu
        # Usual settings of IsaacGym's dexterous-hand tasks (TGS solver, small contact offset).
        sp.physx.solver_type = 1
        sp.physx.num_position_iterations = 8
        sp.physx.num_velocity_iterations = 0
        sp.physx.num_threads = 4
        sp.physx.contact_offset = 0.002
        sp.physx.rest_offset = 0.0
        sp.physx.bounce_threshold_velocity = 0.2
        sp.physx.max_depenetration_velocity = 1000.0
        sp.physx.default_buffer_size_multiplier = 5.0
        graphics_device = -1 if self.headless else compute_device
        self.sim = gym.create_sim(compute_device, graphics_device, gymapi.SIM_PHYSX, sp)
        if self.sim is None:
            raise RuntimeError(f"IsaacGym could not create a PhysX sim on device {self.device!r} (see its log)")
        plane = gymapi.PlaneParams()
        plane.normal = gymapi.Vec3(0.0, 0.0, 1.0)
        plane.distance = 0.0
        plane.static_friction = 1.0
        plane.dynamic_friction = 1.0
        plane.restitution = 0.0
        gym.add_ground(self.sim, plane)

    def _load(self, folder: Path, filename: str, options):
        asset = self.gym.load_asset(self.sim, str(folder), filename, options)
        if asset is None:
            raise RuntimeError(f"IsaacGym could not load {folder / filename}")
        return asset

    def _create_scene(self) -> None:
        gymapi, gym, cfg = self.gymapi, self.gym, self.cfg
        folder = Path(self._assets_dir.name)
        urdfs = write_urdfs(cfg, folder)

        robot_opts = gymapi.AssetOptions()
        robot_opts.fix_base_link = True
        robot_opts.disable_gravity = True  # gravity compensation, as in the MuJoCo twin
        robot_opts.collapse_fixed_joints = False  # keep base_link, palm, palm_center and the tips
        robot_opts.default_dof_drive_mode = int(gymapi.DOF_MODE_POS)
        robot_opts.armature = 0.0
        robot_opts.override_com = False
        robot_opts.override_inertia = False
        robot_assets = {side: self._load(folder, urdfs[side].name, robot_opts) for side in SIDES}

        self.env = gym.create_env(self.sim, gymapi.Vec3(-2.0, -3.0, 0.0), gymapi.Vec3(2.0, 2.0, 2.0), 1)
        self._robots: Dict[str, _Robot] = {}
        self._nominal_dof_props: Dict[str, Any] = {}
        efforts_ok = True
        for side in SIDES:
            side_cfg = getattr(cfg, side)
            pose = gymapi.Transform()
            pose.p = gymapi.Vec3(*map(float, side_cfg.base_position))
            pose.r = _yaw_quat(gymapi, side_cfg.base_yaw)
            handle = gym.create_actor(self.env, robot_assets[side], pose, side, 0, ROBOT_FILTER)
            robot = self._map_dofs(side, handle)
            self._robots[side] = robot
            self._configure_drives(robot)
            efforts_ok = bool(gym.enable_actor_dof_force_sensors(self.env, handle)) and efforts_ok
            shapes = gym.get_actor_rigid_shape_properties(self.env, handle)
            for shape in shapes:
                shape.friction = 1.0  # MuJoCo's default geom friction, which the twin's robots have
            gym.set_actor_rigid_shape_properties(self.env, handle, shapes)
            self._create_pedestal(side, side_cfg.base_position)
        self.provides_effort = efforts_ok
        self._create_object(folder)

    def _map_dofs(self, side: str, handle: int) -> _Robot:
        """Actor DOF index of every joint of ``side``, found by its URDF name."""
        gymapi, gym = self.gymapi, self.gym
        names = list(gym.get_actor_dof_names(self.env, handle))
        side_joints = getattr(self.cfg, side).joint_names
        if len(names) != len(side_joints):
            raise RuntimeError(f"IsaacGym actor {side!r} has {len(names)} DOFs {names}, the cell config {len(side_joints)}")
        dof = []
        for joint in side_joints:
            urdf_name = urdf_joint_name(joint)
            i = gym.find_actor_dof_index(self.env, handle, urdf_name, gymapi.DOMAIN_ACTOR)
            if i < 0 or i >= len(names) or names[i] != urdf_name:
                raise RuntimeError(f"IsaacGym actor {side!r} has no DOF named {urdf_name!r} (its DOFs: {names})")
            dof.append(i)
        dof = np.asarray(dof, dtype=np.int64)
        hand = dof[[k for k, joint in enumerate(side_joints) if "/joint_" in joint]]
        return _Robot(side, handle, dof, np.zeros(len(names), dtype=np.float32), hand)

    def _configure_drives(self, robot: _Robot) -> None:
        """PD position drives with the contract's gains and the limits of robot-cell.md/contract."""
        tw = self.cfg.twin
        n_arm = len(getattr(self.cfg, robot.side).arm.joints)
        props = self.gym.get_actor_dof_properties(self.env, robot.handle)
        for k, i in enumerate(robot.dof):  # k: contract index within the side, i: actor DOF index
            if k < n_arm:  # arm joint k+1
                kp, kd, effort, velocity = tw.arm_stiffness[k], tw.arm_damping[k], tw.arm_effort_limit[k], ARM_VELOCITY_LIMIT
            else:
                kp, kd, effort, velocity = tw.hand_stiffness, tw.hand_damping, tw.hand_effort_limit, HAND_VELOCITY_LIMIT
            props["driveMode"][i] = int(self.gymapi.DOF_MODE_POS)
            props["stiffness"][i] = kp
            props["damping"][i] = kd
            props["effort"][i] = effort
            props["velocity"][i] = velocity
            props["friction"][i] = 0.0
            props["armature"][i] = 0.0
        self.gym.set_actor_dof_properties(self.env, robot.handle, props)
        self._nominal_dof_props[robot.side] = props.copy()

    def _create_pedestal(self, side: str, base_position) -> None:
        gymapi = self.gymapi
        x, y, z = map(float, base_position)
        opts = gymapi.AssetOptions()
        opts.fix_base_link = True
        asset = self.gym.create_box(self.sim, 2 * PEDESTAL_HALF_SIDE, 2 * PEDESTAL_HALF_SIDE, z, opts)
        pose = gymapi.Transform()
        pose.p = gymapi.Vec3(x, y, z / 2.0)
        self.gym.create_actor(self.env, asset, pose, f"{side}_pedestal", 0, ROBOT_FILTER)

    def _create_object(self, folder: Path) -> None:
        gymapi, gym = self.gymapi, self.gym
        obj = self.cfg.twin.object
        s = obj.size
        opts = gymapi.AssetOptions()
        if obj.shape == "cube":
            opts.density = obj.mass / (2 * s) ** 3
            asset = gym.create_box(self.sim, 2 * s, 2 * s, 2 * s, opts)
        elif obj.shape == "sphere":
            opts.density = obj.mass / (4.0 / 3.0 * np.pi * s**3)
            asset = gym.create_sphere(self.sim, s, opts)
        else:  # cylinder: from URDF (mass and inertia given there)
            (folder / "object.urdf").write_text(object_urdf(self.cfg))
            asset = self._load(folder, "object.urdf", opts)
        pose = gymapi.Transform()
        pose.p = gymapi.Vec3(*map(float, self.cfg.object.start_position))
        self.object_handle = gym.create_actor(self.env, asset, pose, "object", 0, 0)
        gym.set_rigid_body_color(self.env, self.object_handle, 0, gymapi.MESH_VISUAL_AND_COLLISION, gymapi.Vec3(*OBJECT_RGB))
        self._nominal_object = {
            "mass": obj.mass,
            "inertia": _nominal_object_inertia(obj.shape, s, obj.mass),
            "friction": obj.friction,
        }

    def _create_viewer(self) -> None:
        gymapi = self.gymapi
        self.viewer = self.gym.create_viewer(self.sim, gymapi.CameraProperties())
        if self.viewer is None:
            raise RuntimeError("IsaacGym could not open a viewer (no display?); use headless=True")
        cam = self.cfg.twin.cameras["overview"]
        self.gym.viewer_camera_look_at(self.viewer, self.env, gymapi.Vec3(*map(float, cam.position)),
                                       gymapi.Vec3(*map(float, cam.target)))

    def close(self) -> None:
        """Free the viewer, the sim and the generated assets. Idempotent."""
        if self.viewer is not None:
            self.gym.destroy_viewer(self.viewer)
            self.viewer = None
        if self.sim is not None:
            self.gym.destroy_sim(self.sim)
            self.sim = None
        self._assets_dir.cleanup()

    def __enter__(self) -> "IsaacGymTwin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- time -------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Simulation time since the last reset, s."""
        return self._steps * self.physics_dt

    def step(self, control_steps: int = 1) -> float:
        """Advance ``control_steps`` control periods; returns the new simulation time."""
        for _ in range(control_steps * self.steps_per_control):
            self._physics_step()
        return self.time

    def advance(self, dt: float) -> float:
        """Advance by at least ``dt`` seconds in whole physics steps; returns the new time."""
        for _ in range(max(0, int(np.ceil(dt / self.physics_dt - 1e-9)))):
            self._physics_step()
        return self.time

    def _physics_step(self) -> None:
        self.gym.simulate(self.sim)
        self.gym.fetch_results(self.sim, True)
        self._steps += 1
        if self.viewer is not None and self._steps % self.steps_per_control == 0:
            self.gym.step_graphics(self.sim)
            self.gym.draw_viewer(self.viewer, self.sim, True)
        self.camera.observe(self.time, self.object_position())

    # -- episodes ---------------------------------------------------------------------------------

    def reset(self, params: Optional[EpisodeParams] = None, object_start: Optional[np.ndarray] = None) -> None:
        """Start an episode: default pose (clamped to the limits) held by the drives, object at
        ``object_start`` (default: the config's) at rest, clock at 0, episode parameters applied."""
        self.params = params or EpisodeParams()
        self._apply_params(self.params)
        q = home_qpos(self.cfg)[:44]
        for k, side in enumerate(SIDES):
            robot = self._robots[side]
            side_q = q[22 * k:22 * (k + 1)]
            states = self.gym.get_actor_dof_states(self.env, robot.handle, self.gymapi.STATE_ALL)
            states["pos"][robot.dof] = side_q
            states["vel"][:] = 0.0
            self._check(self.gym.set_actor_dof_states(self.env, robot.handle, states, self.gymapi.STATE_ALL),
                        f"set the DOF states of {side}")
            robot.targets[robot.dof] = side_q
            self._send_targets(robot)
        start = np.asarray(self.cfg.object.start_position if object_start is None else object_start, float)
        self.set_object_state(start, np.zeros(3))
        self._steps = 0
        self.camera.reset(0.0)
        self.camera.observe(0.0, self.object_position())
        self.episode += 1

    def _apply_params(self, p: EpisodeParams) -> None:
        gymapi, gym, env, obj, nom = self.gymapi, self.gym, self.env, self.object_handle, self._nominal_object
        if abs(gym.get_actor_scale(env, obj) - p.scale_factor) > 1e-7:  # only touch the scale when it changes
            self._check(gym.set_actor_scale(env, obj, float(p.scale_factor)), "scale the object")
        bodies = gym.get_actor_rigid_body_properties(env, obj)
        bodies[0].mass = float(nom["mass"] * p.mass_factor)
        inertia = nom["inertia"] * p.mass_factor * p.scale_factor**2
        mat = gymapi.Mat33()
        mat.x = gymapi.Vec3(float(inertia[0]), 0.0, 0.0)
        mat.y = gymapi.Vec3(0.0, float(inertia[1]), 0.0)
        mat.z = gymapi.Vec3(0.0, 0.0, float(inertia[2]))
        bodies[0].inertia = mat
        self._check(gym.set_actor_rigid_body_properties(env, obj, bodies, False), "set the object's mass")
        shapes = gym.get_actor_rigid_shape_properties(env, obj)
        for shape in shapes:
            shape.friction = float(nom["friction"] * p.friction_factor)
        self._check(gym.set_actor_rigid_shape_properties(env, obj, shapes), "set the object's friction")
        for side, robot in self._robots.items():
            props = self._nominal_dof_props[side].copy()
            props["stiffness"][robot.hand] *= p.hand_stiffness_scale
            props["damping"][robot.hand] *= p.hand_damping_scale
            self._check(gym.set_actor_dof_properties(env, robot.handle, props), f"set the hand gains of {side}")

    @staticmethod
    def _check(result, action: str) -> None:
        """IsaacGym setters return False on failure (some return None): only False is an error."""
        if result is False:
            raise RuntimeError(f"IsaacGym could not {action}")

    # -- state ------------------------------------------------------------------------------------

    def dof_state(self, side: str) -> Tuple[np.ndarray, np.ndarray]:
        """Positions (rad) and velocities (rad/s) of ``side``'s 22 joints, contract order."""
        robot = self._robots[side]
        states = self.gym.get_actor_dof_states(self.env, robot.handle, self.gymapi.STATE_ALL)
        return (np.asarray(states["pos"][robot.dof], dtype=np.float64),
                np.asarray(states["vel"][robot.dof], dtype=np.float64))

    def dof_forces(self, side: str) -> Optional[np.ndarray]:
        """Joint forces (N*m) of ``side``'s 22 joints, contract order; None without force sensors."""
        if not self.provides_effort:
            return None
        robot = self._robots[side]
        forces = self.gym.get_actor_dof_forces(self.env, robot.handle)
        return np.asarray(forces, dtype=np.float64)[robot.dof]

    def position_targets(self, side: str) -> np.ndarray:
        """The PD targets (rad) of ``side``'s 22 joints, contract order."""
        robot = self._robots[side]
        return robot.targets[robot.dof].astype(np.float64)

    def set_position_targets(self, side: str, joints: np.ndarray, targets: np.ndarray) -> None:
        """Set the PD targets (rad) of ``side``'s joints ``joints`` (indices 0..21, contract order);
        they act from the next physics step on."""
        robot = self._robots[side]
        robot.targets[robot.dof[np.asarray(joints)]] = np.asarray(targets, dtype=np.float32)
        self._send_targets(robot)

    def _send_targets(self, robot: _Robot) -> None:
        self._check(self.gym.set_actor_dof_position_targets(self.env, robot.handle, robot.targets),
                    f"set the position targets of {robot.side}")

    def read_joints(self, index: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Positions (rad), velocities (rad/s), joint forces (N*m, None without force sensors) of the
        joints ``index`` (contract indices 0..43)."""
        index = np.asarray(index)
        pos = np.concatenate([self.dof_state(side)[0] for side in SIDES])
        vel = np.concatenate([self.dof_state(side)[1] for side in SIDES])
        forces = [self.dof_forces(side) for side in SIDES]
        effort = None if forces[0] is None else np.concatenate(forces)[index]
        return pos[index], vel[index], effort

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        """PD position targets (rad) of the joints ``index`` (contract indices 0..43)."""
        index, targets = np.asarray(index), np.asarray(targets, dtype=float)
        for s, side in enumerate(SIDES):
            mine = (index // 22) == s
            if mine.any():
                self.set_position_targets(side, index[mine] % 22, targets[mine])

    def joint_positions(self) -> np.ndarray:
        """All 44 joint positions (rad), contract order."""
        return np.concatenate([self.dof_state(side)[0] for side in SIDES])

    def joint_velocities(self) -> np.ndarray:
        """All 44 joint velocities (rad/s), contract order."""
        return np.concatenate([self.dof_state(side)[1] for side in SIDES])

    def _object_state(self, flags):
        return self.gym.get_actor_rigid_body_states(self.env, self.object_handle, flags)

    def object_position(self) -> np.ndarray:
        """True object position (m, world = env frame)."""
        p = self._object_state(self.gymapi.STATE_POS)["pose"]["p"][0]
        return np.array([p["x"], p["y"], p["z"]], dtype=np.float64)

    def object_velocity(self) -> np.ndarray:
        """True object linear velocity (m/s, world)."""
        v = self._object_state(self.gymapi.STATE_VEL)["vel"]["linear"][0]
        return np.array([v["x"], v["y"], v["z"]], dtype=np.float64)

    def set_object_state(self, position: np.ndarray, velocity: np.ndarray) -> None:
        """Place the object (m, world, upright) with a linear velocity (m/s, world)."""
        states = self._object_state(self.gymapi.STATE_ALL)
        pose, vel = states["pose"], states["vel"]
        for axis, value in zip("xyz", np.asarray(position, float)):
            pose["p"][axis][0] = value
        for axis, value in zip("xyzw", (0.0, 0.0, 0.0, 1.0)):
            pose["r"][axis][0] = value
        for axis, value in zip("xyz", np.asarray(velocity, float)):
            vel["linear"][axis][0] = value
            vel["angular"][axis][0] = 0.0
        self._check(self.gym.set_actor_rigid_body_states(self.env, self.object_handle, states, self.gymapi.STATE_ALL),
                    "place the object")


# -------------------------------------------------------------------------------------------------
# Devices


def isaacgym_devices(twin: IsaacGymTwin) -> TwinDevices:
    """Every device of the cell on the IsaacGym twin: the same device classes as the MuJoCo twin."""
    return TwinDevices.create(twin)
