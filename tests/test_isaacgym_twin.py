"""The IsaacGym adapter: its URDF assets are the MuJoCo twin's cell, and its devices pass the
conformance suites. Units: m, rad, s, kg.

Three layers:

- URDF tests (run everywhere): the generated robots parse, carry the config's joint names, axes,
  limits and robot-cell.md's masses, load in MuJoCo and have exactly the MuJoCo twin's forward
  kinematics and inertias -- so the assets IsaacGym loads are the same cell.
- Stand-in tests (run everywhere): :class:`IsaacGymTwin` and its devices driven through
  :class:`FakeGymApi`, a kinematic stand-in for the documented ``gymapi`` calls the adapter makes
  (joints slew to their position targets within their limits and velocity limits; no contacts,
  no gravity). They check the adapter's plumbing -- DOFs by name, drive settings, episode
  parameters, clock, camera -- and run both conformance suites over it. They say nothing about
  IsaacGym's physics.
- IsaacGym tests: the conformance suites and the physics checks on real IsaacGym. They run where
  ``isaacgym`` imports and are skipped otherwise, with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib.util
import math
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest

from handover.drivers.conformance import (
    JointGroupConformance,
    JointGroupHarness,
    ObjectTrackerConformance,
    ObjectTrackerHarness,
)
from handover.runtime.cell_config import load_cell_config
from handover.sim_twin import isaacgym_twin as igt
from handover.sim_twin.devices import GROUPS
from handover.sim_twin.isaacgym_twin import IsaacGymTwin, isaacgym_devices
from handover.sim_twin.kinematics import CHAINS, LINK_MASS
from handover.sim_twin.model import build_model, link_collision_shapes, rpy_to_quat
from handover.sim_twin.twin import EpisodeParams
from handover.sim_twin.urdf import FRAME_MASS, object_urdf, side_urdf, urdf_joint_name, write_urdfs

CFG = load_cell_config()
SIDES = ("thrower", "catcher")
ISAACGYM_REASON = "IsaacGym is not installed (Python 3.8 only, not on PyPI)"


def clamped_default(side: str) -> np.ndarray:
    s = getattr(CFG, side)
    return np.clip(np.array(s.default), np.array(s.lower), np.array(s.upper))


# =================================================================================================
# URDF assets


def urdf_for_mujoco(text: str) -> str:
    """MuJoCo fuses fixed-joint links of a URDF into their parents by default; keep them as bodies
    so the fixed frames (palm, palm_center, tips) can be compared."""
    return re.sub(r"(<robot [^>]*>)", r'\1<mujoco><compiler fusestatic="false"/></mujoco>', text, count=1)


def floats(text: str) -> list:
    return [float(v) for v in text.split()]


@pytest.mark.parametrize("side", SIDES)
def test_urdf_joint_names_axes_limits_and_masses(side):
    root = ET.fromstring(side_urdf(CFG, side))
    side_cfg = getattr(CFG, side)
    joints = {j.get("name"): j for j in root.findall("joint")}
    links = {link.get("name"): link for link in root.findall("link")}
    revolute = {n: j for n, j in joints.items() if j.get("type") == "revolute"}
    assert sorted(revolute) == sorted(urdf_joint_name(n) for n in side_cfg.joint_names)
    assert {n for n, j in joints.items() if j.get("type") == "fixed"} == {
        "gripper_base_joint", "joint_3.0_tip", "joint_7.0_tip", "joint_11.0_tip", "joint_15.0_tip", "palm_joint",
        "palm_center_joint"}
    rows = {link.joint: link for link in CHAINS[side]}
    for k, name in enumerate(side_cfg.joint_names):
        j = revolute[urdf_joint_name(name)]
        row = rows[urdf_joint_name(name)]
        assert (j.find("parent").get("link"), j.find("child").get("link")) == (row.parent, row.child)
        assert floats(j.find("origin").get("xyz")) == list(row.xyz)
        assert floats(j.find("origin").get("rpy")) == list(row.rpy)
        assert floats(j.find("axis").get("xyz")) == list(row.axis)
        limit = j.find("limit")
        assert float(limit.get("lower")) == side_cfg.lower[k] and float(limit.get("upper")) == side_cfg.upper[k]
        if k < 6:
            assert float(limit.get("effort")) == (50.0, 50.0, 32.0, 32.0, 32.0, 20.0)[k]
            assert float(limit.get("velocity")) == 3.14
        else:
            assert float(limit.get("effort")) == 5.0 and float(limit.get("velocity")) == 3.0
    # the catcher's mirrored thumb and the side-specific limits (robot-cell.md, second table)
    if side == "catcher":
        assert floats(revolute["joint_12.0"].find("axis").get("xyz")) == [-1.0, 0.0, 0.0]
        assert floats(revolute["joint5"].find("limit").get("lower")) == [-1.69297]
        assert floats(revolute["joint5"].find("limit").get("upper")) == [3.14159265359]
    else:
        assert floats(revolute["joint_13.0"].find("axis").get("xyz")) == [0.0, 0.0, -1.0]
    for name, mass in LINK_MASS.items():
        assert float(links[name].find("inertial/mass").get("value")) == mass
    for frame in ("palm", "palm_center", "link_3.0_tip", "link_15.0_tip"):
        assert float(links[frame].find("inertial/mass").get("value")) == FRAME_MASS
        assert links[frame].find("collision") is None


def test_urdf_capsules_are_a_cylinder_and_two_end_spheres():
    """link2's capsule runs from the origin to the joint3 origin (0.0535, -0.2845, 0), radius 0.05."""
    link2 = next(link for link in ET.fromstring(side_urdf(CFG, "thrower")).findall("link") if link.get("name") == "link2")
    collisions = link2.findall("collision")
    assert len(collisions) == 3
    cyl = collisions[0].find("geometry/cylinder")
    assert float(cyl.get("radius")) == 0.05
    assert float(cyl.get("length")) == pytest.approx(math.hypot(0.0535, 0.2845), abs=1e-12)
    np.testing.assert_allclose(floats(collisions[0].find("origin").get("xyz")), [0.02675, -0.14225, 0.0], atol=1e-12)
    ends = [floats(c.find("origin").get("xyz")) for c in collisions[1:]]
    np.testing.assert_allclose(ends, [[0, 0, 0], [0.0535, -0.2845, 0]], atol=1e-12)
    assert all(float(c.find("geometry/sphere").get("radius")) == 0.05 for c in collisions[1:])
    # the cylinder's rpy turns its z axis onto the capsule's axis (URDF: R = Rz Ry Rx)
    r, p, y = floats(collisions[0].find("origin").get("rpy"))
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, rpy_to_quat((r, p, y)))
    np.testing.assert_allclose(rot.reshape(3, 3)[:, 2], np.array([0.0535, -0.2845, 0]) / math.hypot(0.0535, 0.2845), atol=1e-12)


@pytest.mark.parametrize("side", SIDES)
def test_urdf_in_mujoco_has_the_twins_kinematics_and_inertia(side):
    """Default pose: every link and fixed frame of the URDF (loaded by MuJoCo, base at the origin)
    sits where the MuJoCo twin has it relative to the side's arm base, within 1e-4 m (in fact to
    rounding), with the same orientation; every body has the twin's mass, centre of mass and
    principal inertia. So IsaacGym loads the same cell as the MuJoCo twin."""
    m = mujoco.MjModel.from_xml_string(urdf_for_mujoco(side_urdf(CFG, side)))
    d = mujoco.MjData(m)
    side_cfg = getattr(CFG, side)
    hinges = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    assert sorted(hinges) == sorted(urdf_joint_name(n) for n in side_cfg.joint_names) and m.njnt == 22
    for k, name in enumerate(side_cfg.joint_names):
        j = m.joint(urdf_joint_name(name))
        np.testing.assert_allclose(m.jnt_range[j.id], [side_cfg.lower[k], side_cfg.upper[k]])
        d.qpos[m.jnt_qposadr[j.id]] = clamped_default(side)[k]
    mujoco.mj_forward(m, d)

    tm = build_model(CFG)
    td = mujoco.MjData(tm)
    mujoco.mj_resetDataKeyframe(tm, td, tm.key("home").id)
    mujoco.mj_forward(tm, td)
    base = td.body(f"{side}/link_base")
    r0, p0 = base.xmat.reshape(3, 3), base.xpos.copy()

    frames = {"palm", "palm_center", "link_3.0_tip", "link_7.0_tip", "link_11.0_tip", "link_15.0_tip"}
    compared = set()
    for i in range(1, m.nbody):
        name = m.body(i).name
        twin_frame = td.site(f"{side}/{name}") if name in frames else td.body(f"{side}/{name}")
        np.testing.assert_allclose(d.xpos[i], r0.T @ (twin_frame.xpos - p0), rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(d.xmat[i].reshape(3, 3), r0.T @ twin_frame.xmat.reshape(3, 3), rtol=0, atol=1e-6,
                                   err_msg=name)
        compared.add(name)
        if name in frames:
            assert m.body_mass[i] == pytest.approx(FRAME_MASS)
            continue
        twin_body = tm.body(f"{side}/{name}").id
        assert m.body_mass[i] == pytest.approx(tm.body_mass[twin_body], rel=1e-12), name
        np.testing.assert_allclose(m.body_ipos[i], tm.body_ipos[twin_body], atol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.sort(m.body_inertia[i]), np.sort(tm.body_inertia[twin_body]), rtol=1e-9,
                                   err_msg=name)
    assert compared == set(link_collision_shapes(side)) | frames
    # the twin's documented palm_center, for the record (test_twin.py)
    if side == "thrower":
        np.testing.assert_allclose(r0 @ d.body("palm_center").xpos + p0, [0.001, -0.334, 0.439], atol=1.5e-3)


def test_write_urdfs_writes_files_that_load(tmp_path):
    paths = write_urdfs(CFG, tmp_path / "assets")
    assert set(paths) == set(SIDES)
    for side, path in paths.items():
        assert path.name == f"{side}.urdf" and path.read_text() == side_urdf(CFG, side)
        assert mujoco.MjModel.from_xml_path(str(path)).njnt == 22


def test_object_urdf_cylinder_has_the_twins_size_mass_and_inertia():
    cfg = dataclasses.replace(CFG, twin=dataclasses.replace(CFG.twin, object=dataclasses.replace(
        CFG.twin.object, shape="cylinder", size=0.03, mass=0.2)))
    root = ET.fromstring(object_urdf(cfg))
    cyl = root.find("link/collision/geometry/cylinder")
    assert float(cyl.get("radius")) == 0.03 and float(cyl.get("length")) == pytest.approx(0.06)
    m = mujoco.MjModel.from_xml_string(urdf_for_mujoco(object_urdf(cfg)))
    b = m.body("object").id
    assert m.body_mass[b] == pytest.approx(0.2)
    transverse = 0.2 * (3 * 0.03**2 + 0.06**2) / 12
    np.testing.assert_allclose(np.sort(m.body_inertia[b]), np.sort([transverse, transverse, 0.5 * 0.2 * 0.03**2]))
    np.testing.assert_allclose(igt._nominal_object_inertia("cylinder", 0.03, 0.2), [transverse, transverse, 0.5 * 0.2 * 0.03**2])


# =================================================================================================
# Without IsaacGym


def test_twin_without_isaacgym_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "isaacgym", None)  # as if not installed, even where it is
    with pytest.raises(ImportError, match=re.escape(igt.ISAACGYM_MISSING)):
        IsaacGymTwin(CFG)
    assert igt.ISAACGYM_MISSING == ("IsaacGym is not installed (Python 3.8 only, from NVIDIA's site); "
                                    "use the MuJoCo twin")


def test_isaacgym_refusing_to_load_after_torch_is_not_reported_as_missing(monkeypatch):
    def refuse(name):
        raise ImportError("PyTorch was imported before isaacgym modules.  Please import torch after isaacgym modules.")

    monkeypatch.setattr(igt.importlib, "import_module", refuse)
    with pytest.raises(ImportError, match="installed but cannot be imported: PyTorch.*before anything imports torch"):
        IsaacGymTwin(CFG)


def test_module_imports_without_importing_isaacgym():
    code = "import sys, handover.sim_twin.isaacgym_twin; assert 'isaacgym' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("device, expected", [("cpu", (0, False)), ("cuda", (0, True)), ("cuda:1", (1, True))])
def test_parse_device(device, expected):
    assert igt.parse_device(device) == expected


def test_bad_device_is_refused_before_anything_else():
    with pytest.raises(ValueError, match="'gpu'"):
        IsaacGymTwin(CFG, device="gpu")


# =================================================================================================
# A kinematic stand-in for the gymapi calls the adapter makes


class FakeGymApi(types.SimpleNamespace):
    """The subset of ``isaacgym.gymapi`` that :mod:`handover.sim_twin.isaacgym_twin` uses, with the
    documented names, argument orders and numpy dtypes. Physics: each DOF in DOF_MODE_POS slews
    towards its target (first order, tau 30 ms, at most its velocity limit, inside its limits);
    DOFs in any other mode do not move; the object keeps its set velocity, without gravity."""


class _DriveMode(enum.IntEnum):
    DOF_MODE_NONE = 0
    DOF_MODE_POS = 1
    DOF_MODE_VEL = 2
    DOF_MODE_EFFORT = 3


_DOF_PROPS = np.dtype([("hasLimits", "?"), ("lower", "<f4"), ("upper", "<f4"), ("driveMode", "<i4"),
                       ("velocity", "<f4"), ("effort", "<f4"), ("stiffness", "<f4"), ("damping", "<f4"),
                       ("friction", "<f4"), ("armature", "<f4")])
_DOF_STATE = np.dtype([("pos", "<f4"), ("vel", "<f4")])
_XYZ = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
_BODY_STATE = np.dtype([("pose", [("p", _XYZ), ("r", _XYZ + [("w", "<f4")])]),
                        ("vel", [("linear", _XYZ), ("angular", _XYZ)])])


class _Vec3:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = float(x), float(y), float(z)


class _Quat:
    def __init__(self, x=0.0, y=0.0, z=0.0, w=1.0):
        self.x, self.y, self.z, self.w = float(x), float(y), float(z), float(w)


class _Transform:
    def __init__(self, p=None, r=None):
        self.p, self.r = p or _Vec3(), r or _Quat()


class _Mat33:
    def __init__(self):
        self.x, self.y, self.z = _Vec3(), _Vec3(), _Vec3()


class _Ns(types.SimpleNamespace):
    pass


class _Actor:
    def __init__(self, asset: dict, pose: _Transform, name: str, group: int, filter: int):
        self.asset, self.pose, self.name, self.group, self.filter = asset, pose, name, group, filter
        n = len(asset["dofs"])
        self.dof_names = [dof[0] for dof in asset["dofs"]]
        self.props = np.zeros(n, _DOF_PROPS)
        for i, (_, lo, hi, effort, velocity) in enumerate(asset["dofs"]):
            self.props[i] = (True, lo, hi, int(asset["options"].default_dof_drive_mode), velocity, effort, 0, 0, 0, 0)
        self.state = np.zeros(n, _DOF_STATE)
        self.targets = np.zeros(n, np.float32)
        self.body_state = np.zeros(1, _BODY_STATE)
        self.body_state["pose"]["p"][0] = (pose.p.x, pose.p.y, pose.p.z)
        self.body_state["pose"]["r"][0] = (pose.r.x, pose.r.y, pose.r.z, pose.r.w)
        self.bodies = [_Ns(mass=1.0, inertia=_Mat33(), com=_Vec3(), flags=0, invMass=1.0, invInertia=_Mat33())]
        self.shapes = [_Ns(friction=0.5, rolling_friction=0.0, torsion_friction=0.0, restitution=0.0)]
        self.scale = 1.0
        self.force_sensors = False


class FakeGym:
    TAU = 0.03  # s

    def __init__(self, api: FakeGymApi):
        self.api = api
        self.sims = []
        self.actors = []
        self.time = 0.0
        self.destroyed = False

    # sim, assets, env, actors
    def create_sim(self, compute_device, graphics_device, sim_type, params):
        assert sim_type is self.api.SIM_PHYSX and params.up_axis is self.api.UP_AXIS_Z
        self.params, self.devices = params, (compute_device, graphics_device)
        self.sims.append(object())
        return self.sims[-1]

    def add_ground(self, sim, params):
        self.ground = params

    def load_asset(self, sim, root, filename, options):
        tree = ET.parse(f"{root}/{filename}").getroot()
        dofs = []
        for j in tree.findall("joint"):
            if j.get("type") == "revolute":
                lim = j.find("limit")
                dofs.append((j.get("name"), *(float(lim.get(k)) for k in ("lower", "upper", "effort", "velocity"))))
        dofs.sort(key=lambda dof: dof[0][::-1])  # any order but the contract's: the adapter maps by name
        return {"kind": filename, "dofs": dofs, "options": copy.copy(options)}

    def create_box(self, sim, width, height, depth, options=None):
        return {"kind": "box", "size": (width, height, depth), "dofs": [], "options": copy.copy(options)}

    def create_sphere(self, sim, radius, options=None):
        return {"kind": "sphere", "size": (radius,), "dofs": [], "options": copy.copy(options)}

    def create_env(self, sim, lower, upper, per_row):
        return "env0"

    def create_actor(self, env, asset, pose, name=None, group=-1, filter=-1, segmentationId=0):
        self.actors.append(_Actor(asset, pose, name, group, filter))
        return len(self.actors) - 1

    def prepare_sim(self, sim):
        self.prepared = True
        return True

    def destroy_sim(self, sim):
        self.destroyed = True

    # viewer
    def create_viewer(self, sim, camera_properties):
        self.viewer_frames = 0
        return "viewer"

    def viewer_camera_look_at(self, viewer, env, position, target):
        self.look = ((position.x, position.y, position.z), (target.x, target.y, target.z))

    def step_graphics(self, sim):
        pass

    def draw_viewer(self, viewer, sim, render_collision=True):
        self.viewer_frames += 1

    def destroy_viewer(self, viewer):
        self.viewer_closed = True

    # DOFs
    def get_actor_dof_names(self, env, h):
        return list(self.actors[h].dof_names)

    def find_actor_dof_index(self, env, h, name, domain):
        assert domain is self.api.DOMAIN_ACTOR
        names = self.actors[h].dof_names
        return names.index(name) if name in names else -1

    def get_actor_dof_properties(self, env, h):
        return self.actors[h].props.copy()

    def set_actor_dof_properties(self, env, h, props):
        assert props.dtype == _DOF_PROPS and props.shape == self.actors[h].props.shape
        self.actors[h].props = props.copy()
        return True

    def enable_actor_dof_force_sensors(self, env, h):
        self.actors[h].force_sensors = True
        return True

    def get_actor_dof_states(self, env, h, flags):
        return self.actors[h].state.copy()

    def set_actor_dof_states(self, env, h, states, flags):
        assert states.dtype == _DOF_STATE and flags == self.api.STATE_ALL
        self.actors[h].state = states.copy()
        return True

    def set_actor_dof_position_targets(self, env, h, targets):
        assert isinstance(targets, np.ndarray) and targets.dtype == np.float32 and targets.shape == self.actors[h].targets.shape
        self.actors[h].targets = targets.copy()
        return True

    def get_actor_dof_forces(self, env, h):
        a = self.actors[h]
        assert a.force_sensors, "DOF forces need enable_actor_dof_force_sensors"
        f = a.props["stiffness"] * (a.targets - a.state["pos"]) - a.props["damping"] * a.state["vel"]
        return np.clip(f, -a.props["effort"], a.props["effort"]).astype(np.float32)

    # rigid bodies and shapes
    def get_actor_rigid_shape_properties(self, env, h):
        return [copy.copy(s) for s in self.actors[h].shapes]

    def set_actor_rigid_shape_properties(self, env, h, props):
        self.actors[h].shapes = [copy.copy(s) for s in props]
        return True

    def get_actor_rigid_body_properties(self, env, h):
        return [copy.copy(b) for b in self.actors[h].bodies]

    def set_actor_rigid_body_properties(self, env, h, props, recomputeInertia=False):
        self.actors[h].bodies = [copy.copy(b) for b in props]
        return True

    def get_actor_scale(self, env, h):
        return self.actors[h].scale

    def set_actor_scale(self, env, h, scale):
        self.actors[h].scale = scale
        return True

    def set_rigid_body_color(self, env, h, body, mesh_type, color):
        pass

    def get_actor_rigid_body_states(self, env, h, flags):
        return self.actors[h].body_state.copy()

    def set_actor_rigid_body_states(self, env, h, states, flags):
        assert states.dtype == _BODY_STATE
        self.actors[h].body_state = states.copy()
        return True

    # stepping
    def simulate(self, sim):
        dt = self.params.dt
        for a in self.actors:
            if len(a.dof_names):
                pos = a.state["pos"].astype(np.float64)
                move = (a.targets - pos) * (1.0 - math.exp(-dt / self.TAU))
                move = np.clip(move, -a.props["velocity"] * dt, a.props["velocity"] * dt)
                move[a.props["driveMode"] != int(_DriveMode.DOF_MODE_POS)] = 0.0
                new = np.clip(pos + move, a.props["lower"], a.props["upper"])
                a.state["vel"] = (new - pos) / dt
                a.state["pos"] = new
            else:
                p, v = a.body_state["pose"]["p"], a.body_state["vel"]["linear"]
                for axis in "xyz":
                    p[axis] += v[axis] * dt
        self.time += dt

    def fetch_results(self, sim, wait):
        assert wait

    def actor(self, name: str) -> _Actor:
        return next(a for a in self.actors if a.name == name)


def make_fake_gymapi() -> FakeGymApi:
    api = FakeGymApi(
        SimParams=lambda: _Ns(physx=_Ns()), PlaneParams=_Ns, AssetOptions=lambda: _Ns(density=1000.0),
        CameraProperties=_Ns, Vec3=_Vec3, Quat=_Quat, Transform=_Transform, Mat33=_Mat33,
        UP_AXIS_Z=object(), SIM_PHYSX=object(), DOMAIN_ACTOR=object(), MESH_VISUAL_AND_COLLISION=object(),
        STATE_NONE=0, STATE_POS=1, STATE_VEL=2, STATE_ALL=3, **{m.name: m for m in _DriveMode},
    )
    api.gym = FakeGym(api)
    api.acquire_gym = lambda: api.gym
    return api


@pytest.fixture
def fake_api(monkeypatch) -> FakeGymApi:
    api = make_fake_gymapi()
    monkeypatch.setattr(igt, "import_gymapi", lambda: api)
    return api


@pytest.fixture
def fake_twin(fake_api) -> IsaacGymTwin:
    twin = IsaacGymTwin(CFG)
    yield twin
    twin.close()


def test_stand_in_scene_drives_and_timing(fake_twin, fake_api):
    gym = fake_api.gym
    p = gym.params
    assert p.dt == pytest.approx(1 / 180) and p.substeps == 2 and p.dt / p.substeps == pytest.approx(CFG.twin.timestep_s)
    assert p.use_gpu_pipeline is False and p.physx.use_gpu is False and gym.devices == (0, -1)
    assert gym.prepared and [a.name for a in gym.actors] == [
        "thrower", "thrower_pedestal", "catcher", "catcher_pedestal", "object"]
    for side in SIDES:
        robot = gym.actor(side)
        opts = robot.asset["options"]
        assert opts.fix_base_link and opts.disable_gravity and opts.default_dof_drive_mode == int(_DriveMode.DOF_MODE_POS)
        assert robot.filter == igt.ROBOT_FILTER and gym.actor(f"{side}_pedestal").filter == igt.ROBOT_FILTER
        base = getattr(CFG, side)
        assert (robot.pose.p.x, robot.pose.p.y, robot.pose.p.z) == tuple(base.base_position)
        assert 2 * math.atan2(robot.pose.r.z, robot.pose.r.w) == pytest.approx(base.base_yaw)
        props = {n: robot.props[i] for i, n in enumerate(robot.dof_names)}
        tw = CFG.twin
        for k, joint in enumerate(("joint1", "joint2", "joint3", "joint4", "joint5", "joint6")):
            assert props[joint]["stiffness"] == pytest.approx(tw.arm_stiffness[k])
            assert props[joint]["damping"] == pytest.approx(tw.arm_damping[k])
            assert props[joint]["effort"] == pytest.approx(tw.arm_effort_limit[k])
            assert props[joint]["velocity"] == pytest.approx(3.14)
        assert props["joint3"]["stiffness"] == 64.0 and props["joint3"]["effort"] == 32.0  # contract, robot-cell.md
        assert props["joint_9.0"]["stiffness"] == 30.0 and props["joint_9.0"]["damping"] == 1.0
        assert props["joint_9.0"]["effort"] == 5.0 and props["joint_9.0"]["velocity"] == 3.0
        assert all(props[n]["driveMode"] == int(_DriveMode.DOF_MODE_POS) for n in props)
        assert robot.props["lower"][robot.dof_names.index("joint5")] == pytest.approx(base.arm.lower[4])
    obj = gym.actor("object")
    assert obj.filter == 0 and obj.asset["kind"] == "box" and obj.asset["size"] == pytest.approx((0.05,) * 3)
    assert fake_twin.step() == pytest.approx(1 / 60) and gym.time == pytest.approx(1 / 60)
    assert fake_twin.advance(0.01) == pytest.approx(1 / 60 + 2 / 180)  # 0.01 s: 2 whole steps of 1/180 s
    assert fake_twin.provides_effort


def test_stand_in_reset_pose_object_and_clock(fake_twin, fake_api):
    fake_twin.step(5)
    fake_twin.reset(object_start=np.array([0.1, -0.4, 0.5]))
    assert fake_twin.time == 0.0 and fake_twin.episode == 2
    np.testing.assert_allclose(fake_twin.joint_positions(), np.concatenate([clamped_default(s) for s in SIDES]), atol=1e-6)
    np.testing.assert_allclose(fake_twin.object_position(), [0.1, -0.4, 0.5], atol=1e-6)
    for k, side in enumerate(SIDES):
        robot = fake_api.gym.actor(side)
        for name, q in zip(getattr(CFG, side).joint_names, clamped_default(side)):  # targets by DOF name
            assert robot.targets[robot.dof_names.index(urdf_joint_name(name))] == pytest.approx(q, abs=1e-6)
    fake_twin.set_object_state(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    fake_twin.step(6)  # 0.1 s
    np.testing.assert_allclose(fake_twin.object_position(), [0.1, 0.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(fake_twin.object_velocity(), [1.0, 0.0, 0.0], atol=1e-6)


def test_stand_in_episode_params_reach_the_actor_properties(fake_twin, fake_api):
    gym = fake_api.gym
    fake_twin.reset(EpisodeParams(mass_factor=1.5, friction_factor=0.7, scale_factor=1.05, hand_stiffness_scale=1.2,
                                  hand_damping_scale=0.5))
    obj = gym.actor("object")
    assert obj.scale == 1.05 and obj.bodies[0].mass == pytest.approx(0.22867 * 1.5)
    i0 = 0.22867 * 8 * 0.025**2 / 12
    assert obj.bodies[0].inertia.x.x == pytest.approx(i0 * 1.5 * 1.05**2) and obj.bodies[0].inertia.y.x == 0.0
    assert obj.shapes[0].friction == pytest.approx(0.7)
    thrower = gym.actor("thrower")
    props = {n: thrower.props[i] for i, n in enumerate(thrower.dof_names)}
    assert props["joint_5.0"]["stiffness"] == pytest.approx(36.0) and props["joint_5.0"]["damping"] == pytest.approx(0.5)
    assert props["joint2"]["stiffness"] == 100.0 and props["joint2"]["damping"] == CFG.twin.arm_damping[1]  # arms unchanged
    fake_twin.reset()
    assert obj.scale == 1.0 and obj.bodies[0].mass == pytest.approx(0.22867) and obj.shapes[0].friction == 1.0
    props = {n: gym.actor("thrower").props[i] for i, n in enumerate(thrower.dof_names)}
    assert props["joint_5.0"]["stiffness"] == 30.0 and props["joint_5.0"]["damping"] == 1.0


def test_stand_in_devices_map_joints_by_name(fake_twin, fake_api):
    devices = isaacgym_devices(fake_twin)
    devices.bring_up()
    for (side, group), dev in devices.joint_groups.items():
        lo, hi = np.array(dev.info.lower), np.array(dev.info.upper)
        target = lo + np.linspace(0.2, 0.8, dev.info.size) * (hi - lo)  # distinct per joint
        dev.command(target, fake_twin.time)
        robot = fake_api.gym.actor(side)
        for name, value in zip(dev.info.names, target):
            assert robot.targets[robot.dof_names.index(urdf_joint_name(name))] == pytest.approx(value, abs=1e-6)
    fake_twin.step(60)
    for (side, group), dev in devices.joint_groups.items():
        state = dev.read(fake_twin.time)
        assert state.stamp == fake_twin.time and state.effort is not None and state.velocity is not None
        np.testing.assert_allclose(state.position, fake_twin.position_targets(side)[dev._index % 22], atol=1e-4)
    assert devices.tracker.read(fake_twin.time).valid


def test_stand_in_cylinder_object_comes_from_urdf(fake_api):
    cfg = dataclasses.replace(CFG, twin=dataclasses.replace(CFG.twin, object=dataclasses.replace(CFG.twin.object, shape="cylinder")))
    with IsaacGymTwin(cfg) as twin:
        assert fake_api.gym.actor("object").asset["kind"] == "object.urdf"
        twin.reset(EpisodeParams(mass_factor=2.0))
        assert fake_api.gym.actor("object").bodies[0].mass == pytest.approx(2 * 0.22867)
    assert fake_api.gym.destroyed


def test_stand_in_viewer_draws_once_per_control_step(fake_api):
    with IsaacGymTwin(CFG, headless=False, device="cuda:1") as twin:
        gym = fake_api.gym
        assert gym.devices == (1, 1) and gym.params.physx.use_gpu is True and gym.params.use_gpu_pipeline is False
        cam = CFG.twin.cameras["overview"]
        assert gym.look == (tuple(cam.position), tuple(cam.target))
        twin.step(4)
        assert gym.viewer_frames == 4
    assert gym.viewer_closed and gym.destroyed


@pytest.fixture(params=[f"{s}_{g}" for s, g in GROUPS])
def stand_in_group_harness(request, fake_twin) -> JointGroupHarness:
    side, group = request.param.split("_")
    device = isaacgym_devices(fake_twin).joint_groups[(side, group)]
    return JointGroupHarness(device=device, now=lambda: fake_twin.time, advance=fake_twin.advance,
                             settle_s=2.5 if group == "arm" else 1.0, tolerance=1e-3,  # 4.1 rad at 3.14 rad/s
                             make_failing=lambda: device.fail_next(OSError("simulated bus timeout")))


class TestStandInJointGroups(JointGroupConformance):
    @pytest.fixture
    def joint_group_harness(self, stand_in_group_harness):
        return stand_in_group_harness


class TestStandInTracker(ObjectTrackerConformance):
    @pytest.fixture
    def object_tracker_harness(self, fake_twin):
        device = isaacgym_devices(fake_twin).tracker
        return ObjectTrackerHarness(device=device, now=lambda: fake_twin.time, advance=fake_twin.advance,
                                    period_s=1.0 / 90.0, observe_s=0.2,
                                    make_failing=lambda: device.fail_next(OSError("simulated USB disconnect")))


# =================================================================================================
# Real IsaacGym (skipped where it does not import)


def require_isaacgym():
    """Skip unless IsaacGym imports. IsaacGym refuses to load after torch: say so instead of
    claiming it is not installed."""
    if "isaacgym" not in sys.modules and "torch" in sys.modules and importlib.util.find_spec("isaacgym") is not None:
        pytest.skip("IsaacGym is installed, but torch was imported first in this process and IsaacGym refuses "
                    "that: run this test file on its own")
    return pytest.importorskip("isaacgym", reason=ISAACGYM_REASON)


@pytest.fixture(scope="module")
def gym_twin():
    require_isaacgym()
    twin = IsaacGymTwin(CFG)
    yield twin
    twin.close()


@pytest.fixture(params=[f"{s}_{g}" for s, g in GROUPS])
def isaacgym_group_harness(request, gym_twin) -> JointGroupHarness:
    require_isaacgym()
    side, group = request.param.split("_")
    gym_twin.reset()
    device = isaacgym_devices(gym_twin).joint_groups[(side, group)]
    return JointGroupHarness(
        device=device, now=lambda: gym_twin.time, advance=gym_twin.advance,
        settle_s=2.5 if group == "arm" else 1.0, tolerance=0.02,
        make_failing=lambda: device.fail_next(OSError("simulated bus timeout")),
    )


class TestIsaacGymJointGroups(JointGroupConformance):
    @pytest.fixture
    def joint_group_harness(self, isaacgym_group_harness):
        return isaacgym_group_harness


class TestIsaacGymTracker(ObjectTrackerConformance):
    @pytest.fixture
    def object_tracker_harness(self, gym_twin):
        require_isaacgym()
        gym_twin.reset()
        device = isaacgym_devices(gym_twin).tracker
        return ObjectTrackerHarness(device=device, now=lambda: gym_twin.time, advance=gym_twin.advance,
                                    period_s=1.0 / 90.0, observe_s=0.2,
                                    make_failing=lambda: device.fail_next(OSError("simulated USB disconnect")))


def test_isaacgym_reset_pose_object_and_clock(gym_twin):
    require_isaacgym()
    gym_twin.reset()
    gym_twin.step(3)
    assert gym_twin.time == pytest.approx(3 / 60)
    gym_twin.reset()
    assert gym_twin.time == 0.0
    np.testing.assert_allclose(gym_twin.joint_positions(), np.concatenate([clamped_default(s) for s in SIDES]), atol=1e-5)
    np.testing.assert_allclose(gym_twin.object_position(), CFG.object.start_position, atol=1e-5)


def test_isaacgym_object_stays_in_the_throwers_palm(gym_twin):
    """After reset, both hands holding their default pose for 3 s: the 5 cm cube stays in the
    thrower's hand (within 4 cm of its start, above 0.3 m), as in the MuJoCo twin."""
    require_isaacgym()
    gym_twin.reset()
    start = gym_twin.object_position()
    gym_twin.step(180)
    pos = gym_twin.object_position()
    assert np.linalg.norm(pos - start) < 0.04 and pos[2] > 0.3
    np.testing.assert_allclose(gym_twin.joint_positions(), np.concatenate([clamped_default(s) for s in SIDES]), atol=0.05)


def test_isaacgym_free_flight_is_ballistic(gym_twin):
    """Far from both robots the object flies a parabola (g = 9.81 m/s^2): within 5 mm after 0.3 s."""
    require_isaacgym()
    gym_twin.reset()
    x0, v0 = np.array([1.2, 1.0, 1.5]), np.array([-0.8, -2.0, 2.5])
    gym_twin.set_object_state(x0, v0)
    t0 = gym_twin.time
    t = gym_twin.step(18) - t0
    analytic = x0 + v0 * t + 0.5 * np.array([0.0, 0.0, -9.81]) * t**2
    assert np.linalg.norm(gym_twin.object_position() - analytic) < 5e-3


def test_isaacgym_episode_params_reach_the_sim(gym_twin):
    require_isaacgym()
    gym, env = gym_twin.gym, gym_twin.env
    gym_twin.reset(EpisodeParams(mass_factor=1.5, friction_factor=0.7, hand_stiffness_scale=1.2, hand_damping_scale=0.5))
    assert gym.get_actor_rigid_body_properties(env, gym_twin.object_handle)[0].mass == pytest.approx(0.22867 * 1.5, rel=1e-5)
    assert gym.get_actor_rigid_shape_properties(env, gym_twin.object_handle)[0].friction == pytest.approx(0.7, rel=1e-5)
    handle = gym.find_actor_handle(env, "thrower")
    props = gym.get_actor_dof_properties(env, handle)
    i = gym.find_actor_dof_index(env, handle, "joint_5.0", gym_twin.gymapi.DOMAIN_ACTOR)
    assert props["stiffness"][i] == pytest.approx(36.0) and props["damping"][i] == pytest.approx(0.5)
    gym_twin.reset()
    props = gym.get_actor_dof_properties(env, handle)
    assert props["stiffness"][i] == pytest.approx(30.0)
