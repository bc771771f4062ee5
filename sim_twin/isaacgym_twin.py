"""The cell in IsaacGym (Preview 4, ``isaacgym.gymapi``), behind the same device interfaces as the
MuJoCo twin, for users who have IsaacGym.

IsaacGym is not on PyPI (NVIDIA's download, Python 3.6-3.8 only), so it is imported lazily: this
module imports without it, and :class:`IsaacGymTwin` raises :class:`ImportError` with a clear
message when it is missing. IsaacGym refuses to load once ``torch`` has been imported: create the
twin (or ``import isaacgym``) before anything imports torch.

The scene (one sim, one env, env frame = the cell's world frame, z up, m, rad, s, kg):

- the two robots from :mod:`handover.sim_twin.urdf` (the same kinematics, masses and collision
  shapes as the MuJoCo twin), fixed at their base pose and yaw, actors ``thrower`` and
  ``catcher``. Asset options as the original's (dynamic-handover-contract.md, "Rates and low-level
  control"): ``fix_base_link``, ``disable_gravity`` (the xArm controller and the Allegro driver
  compensate gravity, like ``gravcomp`` in the MuJoCo twin), ``collapse_fixed_joints`` (each
  moving link is one rigid body with its fixed children: ``link6`` carries the palm ``base_link``,
  each ``link_N.0`` its tip; 23 bodies per robot), ``thickness`` 0.001, ``angular_damping`` 0.01,
  ``use_physx_armature`` with armature 0 (the original's URDF gives none).
- DOF properties, per joint by name: ``DOF_MODE_POS``; arm stiffness ``twin.arm_stiffness`` (the
  contract's 100, 100, 64, 64, 64, 40), damping ``twin.arm_damping`` and friction
  ``twin.arm_friction`` (the original's URDF ``<dynamics damping="1.0" friction="1.0">``, also
  written into the generated URDFs), effort ``twin.arm_effort_limit``; hand stiffness 30, damping 1,
  friction 0, effort 5 (``twin.hand_*``); velocity: the config's ``velocity_limit`` of that joint
  (arm 3.14, hand 3.0 rad/s); position limits: the config's training limits (from the URDF).
- a pedestal box under each arm base, a ground plane, and the object: ``cfg.twin.object``
  (cube: ``create_box``, sphere: ``create_sphere``, cylinder: a URDF cylinder of radius ``size``
  and height ``2 * size`` -- IsaacGym has no cylinder primitive, and a capsule of that height
  would be a sphere) with its nominal mass and friction, starting at ``cfg.object.start_position``.
- Collisions: robots and pedestals share filter bit 1 (no robot self-collisions, no robot-robot
  or robot-pedestal contacts), the object has filter 0 and touches everything, like the MuJoCo
  twin's contact bits.

Joint velocity limits: the DOF ``velocity`` property is PhysX's maximum joint velocity, enforced
by the solver with impulses inside each substep, a *soft* constraint (a joint may exceed it
briefly, e.g. under contact or limit impulses). The MuJoCo twin, which has no such limit, clamps
the joint velocities *hard* after each physics step and re-integrates the positions from the
step's start with the clamped velocities (:mod:`handover.sim_twin.twin`). So the two twins can
differ whenever a joint is pushed past its speed limit (PhysX lets it overshoot a little).

Time: the original's simulation parameters, hard-coded in its code base: ``SimParams.dt`` 1/60 s
(a third of the 50 ms control period: ``controlFrequencyInv: 3``), 2 substeps, so PhysX integrates
1/120 s steps, the MuJoCo twin's timestep (``cfg.twin.timestep_s``); position targets persist
until changed, so targets set once per control step act through all its 6 substeps. PhysX: TGS solver, 8 position / 0 velocity
iterations, contact offset 0.002 m, rest offset 0, bounce threshold 0.2 m/s, contacts collected
on the last substep (``CC_LAST_SUBSTEP``). :attr:`IsaacGymTwin.time` counts ``simulate`` steps
since the last :meth:`~IsaacGymTwin.reset` (the MuJoCo twin's clock also restarts at 0).

Episode parameters (:class:`~handover.sim_twin.twin.EpisodeParams`, the MuJoCo twin's meaning):
the object's mass, friction and scale; both hands' gains; the thrower's per-joint stiffness and
damping factors and limit offsets, and per-link mass and friction factors
(:class:`~handover.sim_twin.twin.ThrowerRandomization`: DOF, rigid-body and rigid-shape
properties of the ``thrower`` actor; a merged body whose parts get different mass factors gets
their combined mass, centre of mass and inertia, :func:`~handover.sim_twin.urdf.merged_inertial`);
``gravity_offset``, added to the sim's gravity (``set_sim_params``; the robots ignore gravity, so
it acts on the object). :meth:`~IsaacGymTwin.reset` applies them with the robots at the default
pose; :meth:`~IsaacGymTwin.place_object` applies them and puts the object back at its start
without moving the robots.

State access uses the CPU pipeline's per-actor numpy API (``get_actor_dof_states``,
``set_actor_dof_position_targets``, ``get_actor_rigid_body_states``, ...) on the PhysX CPU or GPU
solver (``device``); every DOF, rigid body and shape is found by name
(``find_actor_dof_index``, ``get_actor_rigid_body_names``), never by position. Efforts are
PhysX's DOF forces (``enable_actor_dof_force_sensors`` + ``get_actor_dof_forces``: the joint
force along each DOF, drive and constraint forces together), provided only when PhysX accepts the
force sensors.
"""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from handover.drivers.joint_group import JointState
from handover.runtime.cell_config import CellConfig
from handover.sim_twin.camera_model import CameraModel
from handover.sim_twin.devices import GROUPS, TwinDevices
from handover.sim_twin.model import home_joints
from handover.sim_twin.twin import EpisodeParams, ThrowerRandomization
from handover.sim_twin.urdf import (
    SIDES,
    BodyPart,
    collapsed_bodies,
    merged_inertial,
    object_urdf,
    randomizable_links,
    urdf_joint_name,
    write_urdfs,
)

ISAACGYM_MISSING = "IsaacGym is not installed (Python 3.8 only, from NVIDIA's site); use the MuJoCo twin"


STEPS_PER_CONTROL = 3  # simulate() calls per control period (the original's controlFrequencyInv)
SUBSTEPS = 2  # PhysX substeps per simulate() (the original's sim.substeps)
GRAVITY = (0.0, 0.0, -9.81)  # m/s^2, nominal; EpisodeParams.gravity_offset is added
ROBOT_FILTER = 1  # collision filter bit of robots and pedestals; the object has 0
ROBOT_FRICTION = 1.0  # robot shapes' friction: MuJoCo's default geom friction, which the twin's robots have
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
class _Body:
    """One rigid body of a robot actor (fixed joints merged): its actor body index, its URDF parts,
    the actor shape indices of each part, and its nominal mass (kg), centre of mass (3, m, body
    frame) and inertia (3, 3, kg*m^2, about the centre of mass) as IsaacGym loaded them."""

    name: str
    index: int
    parts: List[BodyPart]
    shapes: Dict[str, List[int]]  # URDF link -> actor shape indices
    mass: float
    com: np.ndarray
    inertia: np.ndarray


def _vec3_np(v) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def _mat33_np(m) -> np.ndarray:
    """An IsaacGym ``Mat33`` (rows ``x``, ``y``, ``z``) as a numpy (3, 3) array."""
    return np.array([[m.x.x, m.x.y, m.x.z], [m.y.x, m.y.y, m.y.z], [m.z.x, m.z.y, m.z.z]], dtype=np.float64)


def _np_mat33(gymapi, a: np.ndarray):
    m = gymapi.Mat33()
    m.x = gymapi.Vec3(*(float(v) for v in a[0]))
    m.y = gymapi.Vec3(*(float(v) for v in a[1]))
    m.z = gymapi.Vec3(*(float(v) for v in a[2]))
    return m


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
        # The keys of ThrowerRandomization's per-link factors (EpisodeParams.sample_training).
        self.thrower_links = randomizable_links("thrower")
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
        sp.gravity = gymapi.Vec3(*GRAVITY)
        sp.use_gpu_pipeline = False  # per-actor numpy API; the solver may still run on the GPU
        sp.physx.use_gpu = use_gpu
        # The original's PhysX settings (contract, "Rates and low-level control").
        sp.physx.solver_type = 1  # TGS
        sp.physx.num_position_iterations = 8
        sp.physx.num_velocity_iterations = 0
        sp.physx.contact_offset = 0.002
        sp.physx.rest_offset = 0.0
        sp.physx.bounce_threshold_velocity = 0.2
        sp.physx.contact_collection = gymapi.CC_LAST_SUBSTEP
        # Not in the contract: the usual values of IsaacGym's dexterous-hand task configs (CPU threads,
        # GPU buffer sizes, the cap on the depenetration speed), unverified against the original's yaml.
        sp.physx.num_threads = 4
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

        robot_opts = gymapi.AssetOptions()  # the original's asset options (module docstring)
        robot_opts.fix_base_link = True
        robot_opts.disable_gravity = True  # gravity compensation, as in the MuJoCo twin
        robot_opts.collapse_fixed_joints = True  # link6 + base_link (+ palm frames), link_N.0 + tip
        robot_opts.thickness = 0.001
        robot_opts.angular_damping = 0.01
        robot_opts.use_physx_armature = True
        robot_opts.armature = 0.0
        robot_opts.flip_visual_attachments = False
        robot_opts.default_dof_drive_mode = int(gymapi.DOF_MODE_POS)
        robot_opts.override_com = False
        robot_opts.override_inertia = False
        robot_assets = {side: self._load(folder, urdfs[side].name, robot_opts) for side in SIDES}

        self.env = gym.create_env(self.sim, gymapi.Vec3(-2.0, -3.0, 0.0), gymapi.Vec3(2.0, 2.0, 2.0), 1)
        self._robots: Dict[str, _Robot] = {}
        self._nominal_dof_props: Dict[str, Any] = {}
        self._bodies: Dict[str, List[_Body]] = {}
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
                shape.friction = ROBOT_FRICTION
            gym.set_actor_rigid_shape_properties(self.env, handle, shapes)
            self._bodies[side] = self._map_bodies(side, handle)
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
        """The original's DOF properties (module docstring), every value taken for the joint's name."""
        cfg, tw = self.cfg, self.cfg.twin
        side_cfg = getattr(cfg, robot.side)
        velocity = dict(zip(cfg.joint_names, cfg.velocity_limit))  # rad/s by cell joint name
        arm = {name: k for k, name in enumerate(side_cfg.arm.joints)}  # arm joint name -> arm index
        props = self.gym.get_actor_dof_properties(self.env, robot.handle)
        for name, i in zip(side_cfg.joint_names, robot.dof):  # i: the actor DOF index of joint `name`
            if name in arm:
                k = arm[name]
                kp, kd, friction, effort = tw.arm_stiffness[k], tw.arm_damping[k], tw.arm_friction[k], tw.arm_effort_limit[k]
            else:
                kp, kd, friction, effort = tw.hand_stiffness, tw.hand_damping, 0.0, tw.hand_effort_limit
            props["driveMode"][i] = int(self.gymapi.DOF_MODE_POS)
            props["stiffness"][i] = kp
            props["damping"][i] = kd
            props["friction"][i] = friction
            props["effort"][i] = effort
            props["velocity"][i] = velocity[name]
            props["armature"][i] = 0.0
        self.gym.set_actor_dof_properties(self.env, robot.handle, props)
        self._nominal_dof_props[robot.side] = props.copy()

    def _map_bodies(self, side: str, handle: int) -> List[_Body]:
        """The actor's rigid bodies by name, matched with the URDF's merged bodies
        (:func:`~handover.sim_twin.urdf.collapsed_bodies`), with their shapes per URDF link and their
        nominal mass properties. A merged body's shapes are taken to be in the order of its parts
        (its own link's, then its fixed descendants' in URDF order); the shape counts are checked."""
        gym = self.gym
        names = list(gym.get_actor_rigid_body_names(self.env, handle))
        expected = collapsed_bodies(side)
        if sorted(names) != sorted(expected):
            raise RuntimeError(f"IsaacGym actor {side!r} has the rigid bodies {names}, the URDF with fixed joints "
                               f"merged {list(expected)}")
        ranges = gym.get_actor_rigid_body_shape_indices(self.env, handle)
        props = gym.get_actor_rigid_body_properties(self.env, handle)
        bodies = []
        for i, name in enumerate(names):
            parts = expected[name]
            start, count = int(ranges[i].start), int(ranges[i].count)
            if count != sum(p.collisions for p in parts):
                raise RuntimeError(f"IsaacGym body {side}/{name} has {count} shapes, its URDF links "
                                   f"{[(p.link, p.collisions) for p in parts]}")
            shapes, k = {}, start
            for part in parts:
                shapes[part.link] = list(range(k, k + part.collisions))
                k += part.collisions
            bodies.append(_Body(name, i, parts, shapes, float(props[i].mass), _vec3_np(props[i].com),
                                _mat33_np(props[i].inertia)))
        return bodies

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
        """Start an episode: default pose (clamped to the limits) held by the drives, then
        :meth:`place_object` (episode parameters, object at ``object_start`` at rest), clock at 0."""
        q = home_joints(self.cfg)
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
        self.place_object(params, object_start)
        self._steps = 0
        self.camera.reset(0.0)
        self.camera.observe(0.0, self.object_position())

    def place_object(self, params: Optional[EpisodeParams] = None, object_start: Optional[np.ndarray] = None) -> None:
        """Apply ``params`` (default: nominal) and put the object at ``object_start`` (default: the
        config's) at rest, upright; the robots stay where they are. Counts a new episode."""
        self.params = params or EpisodeParams()
        self._apply_params(self.params)
        start = np.asarray(self.cfg.object.start_position if object_start is None else object_start, float)
        self.set_object_state(start, np.zeros(3))
        self.episode += 1

    def _apply_params(self, p: EpisodeParams) -> None:
        """Every episode parameter onto the sim, each from its nominal value (so the previous
        episode's parameters leave no trace)."""
        gymapi, gym, env, obj, nom = self.gymapi, self.gym, self.env, self.object_handle, self._nominal_object
        if abs(gym.get_actor_scale(env, obj) - p.scale_factor) > 1e-7:  # only touch the scale when it changes
            self._check(gym.set_actor_scale(env, obj, float(p.scale_factor)), "scale the object")
        bodies = gym.get_actor_rigid_body_properties(env, obj)
        bodies[0].mass = float(nom["mass"] * p.mass_factor)
        bodies[0].inertia = _np_mat33(gymapi, np.diag(nom["inertia"] * p.mass_factor * p.scale_factor**2))
        self._check(gym.set_actor_rigid_body_properties(env, obj, bodies, False), "set the object's mass")
        shapes = gym.get_actor_rigid_shape_properties(env, obj)
        for shape in shapes:
            shape.friction = float(nom["friction"] * p.friction_factor)
        self._check(gym.set_actor_rigid_shape_properties(env, obj, shapes), "set the object's friction")
        for side, robot in self._robots.items():
            props = self._nominal_dof_props[side].copy()
            props["stiffness"][robot.hand] *= p.hand_stiffness_scale
            props["damping"][robot.hand] *= p.hand_damping_scale
            if side == "thrower" and p.thrower is not None:
                self._randomize_dofs(robot, props, p.thrower)
            self._check(gym.set_actor_dof_properties(env, robot.handle, props), f"set the DOF properties of {side}")
        self._randomize_links(p.thrower)
        sim_params = gym.get_sim_params(self.sim)
        sim_params.gravity = gymapi.Vec3(*(float(g + d) for g, d in zip(GRAVITY, p.gravity_offset)))
        self._check(gym.set_sim_params(self.sim, sim_params), "set the gravity")

    @staticmethod
    def _randomize_dofs(robot: _Robot, props, t: ThrowerRandomization) -> None:
        """Per joint (contract order within the side) stiffness and damping factors and limit
        offsets onto ``props`` (actor DOF order); a limit pair that would cross keeps its nominal
        values, as in the MuJoCo twin."""
        n = len(robot.dof)
        for name in ("stiffness_scale", "damping_scale", "lower_offset", "upper_offset"):
            if len(getattr(t, name)) != n:
                raise ValueError(f"ThrowerRandomization.{name} needs {n} entries (contract order), "
                                 f"got {len(getattr(t, name))}")
        props["stiffness"][robot.dof] *= np.asarray(t.stiffness_scale, dtype=np.float32)
        props["damping"][robot.dof] *= np.asarray(t.damping_scale, dtype=np.float32)
        lower = props["lower"][robot.dof] + np.asarray(t.lower_offset, dtype=np.float32)
        upper = props["upper"][robot.dof] + np.asarray(t.upper_offset, dtype=np.float32)
        ok = lower < upper
        props["lower"][robot.dof[ok]] = lower[ok]
        props["upper"][robot.dof[ok]] = upper[ok]

    def _randomize_links(self, t: Optional[ThrowerRandomization]) -> None:
        """The thrower's per-link mass and friction factors (nominal without ``t``). A link's mass
        factor scales its mass and inertia; a geometry-less frame merged into a body (palm,
        palm_center, tips) follows the link it hangs from; links not named keep factor 1."""
        gymapi, gym, env = self.gymapi, self.gym, self.env
        mass_scale = dict(t.link_mass_scale) if t is not None else {}
        friction_scale = dict(t.link_friction_scale) if t is not None else {}
        unknown = sorted((set(mass_scale) | set(friction_scale)) - set(self.thrower_links))
        if unknown:
            raise ValueError(f"ThrowerRandomization names links the thrower cannot randomize: {unknown} "
                             f"(known: {list(self.thrower_links)})")
        handle = self._robots["thrower"].handle
        props = gym.get_actor_rigid_body_properties(env, handle)
        for body in self._bodies["thrower"]:
            factor: Dict[str, float] = {}
            for part in body.parts:  # parents come before their fixed children
                inherited = factor[part.parent] if part.parent is not None else 1.0
                factor[part.link] = mass_scale.get(part.link, inherited if part.collisions == 0 else 1.0)
            scales = [factor[part.link] for part in body.parts]
            if np.ptp(scales) == 0.0:  # one factor for the whole body: scale IsaacGym's own numbers
                mass, com, inertia = body.mass * scales[0], body.com, body.inertia * scales[0]
            else:
                mass, com, inertia = merged_inertial(body.parts, scales)
            b = props[body.index]
            b.mass = float(mass)
            b.com = gymapi.Vec3(*(float(v) for v in com))
            b.inertia = _np_mat33(gymapi, inertia)
        self._check(gym.set_actor_rigid_body_properties(env, handle, props, False), "set the thrower's link masses")
        shapes = gym.get_actor_rigid_shape_properties(env, handle)
        for body in self._bodies["thrower"]:
            for link, indices in body.shapes.items():
                for i in indices:
                    shapes[i].friction = float(ROBOT_FRICTION * friction_scale.get(link, 1.0))
        self._check(gym.set_actor_rigid_shape_properties(env, handle, shapes), "set the thrower's link friction")

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

    def read_joints(self, index: np.ndarray) -> JointState:
        """Positions (rad), velocities (rad/s), joint forces (N*m, None without force sensors) of the
        joints ``index`` (contract indices 0..43), stamped now (readings are always current here)."""
        index = np.asarray(index)
        pos = np.concatenate([self.dof_state(side)[0] for side in SIDES])
        vel = np.concatenate([self.dof_state(side)[1] for side in SIDES])
        forces = [self.dof_forces(side) for side in SIDES]
        effort = None if forces[0] is None else np.concatenate(forces)[index]
        return JointState(stamp=self.time, position=pos[index], velocity=vel[index], effort=effort)

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
