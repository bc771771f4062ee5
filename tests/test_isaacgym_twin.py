"""The IsaacGym adapter: its URDF assets are the MuJoCo twin's cell, and its devices pass the
conformance suites. Units: m, rad, s, kg.

Three layers:

- URDF tests (run everywhere): the generated robots parse, carry the config's joint names, axes,
  limits, velocity limits and arm ``<dynamics>`` (per joint by name) and robot-cell.md's masses,
  load in MuJoCo and have exactly the MuJoCo twin's forward kinematics and inertias -- so the
  assets IsaacGym loads are the same cell; the merged bodies (fixed joints collapsed, as IsaacGym
  loads them) have MuJoCo's fused masses and inertias.
- Stand-in tests (run everywhere): :class:`IsaacGymTwin` and its devices driven through
  :class:`FakeGymApi`, a kinematic stand-in for the documented ``gymapi`` calls the adapter makes
  (joints slew to their position targets within their limits and velocity limits; no contacts,
  no gravity). They check the adapter's plumbing -- the original's sim parameters (dt 1/60 s, 2
  substeps, PhysX settings) and asset options, DOF properties per joint by name, episode
  parameters (object, hand gains, the thrower's per-joint and per-link randomization, gravity
  offset), ``place_object``, clock, camera -- and run both conformance suites over it. They say
  nothing about IsaacGym's physics.
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
from handover.sim_twin.model import link_collision_shapes, rpy_to_quat
from handover.sim_twin.twin import EpisodeParams, ThrowerRandomization, Twin
from handover.sim_twin.urdf import (
    FRAME_MASS,
    collapsed_bodies,
    merged_inertial,
    object_urdf,
    randomizable_links,
    side_urdf,
    urdf_joint_name,
    write_urdfs,
)

CFG = load_cell_config()
SIDES = ("thrower", "catcher")
ISAACGYM_REASON = "IsaacGym is not installed (Python 3.8 only, not on PyPI)"


def twin_reset() -> Twin:
    """The MuJoCo twin at its reset pose (default joints clamped to the limits)."""
    twin = Twin(CFG)
    twin.reset()
    return twin


def by_name(cfg, values: str) -> dict:
    """{cell joint name: the config's per-joint entry ``values``} for all 44 joints."""
    return dict(zip(cfg.joint_names, getattr(cfg, values)))


def with_distinct_joint_values(cfg=CFG):
    """The config with a different velocity limit per joint and different arm damping and
    friction per joint (so a mix-up of joints shows)."""
    def side(side_cfg, base):
        arm = dataclasses.replace(side_cfg.arm, velocity_limit=tuple(base + 0.01 * k for k in range(6)))
        hand = dataclasses.replace(side_cfg.hand, velocity_limit=tuple(base + 1.0 + 0.01 * k for k in range(16)))
        return dataclasses.replace(side_cfg, arm=arm, hand=hand)

    twin = dataclasses.replace(cfg.twin, arm_damping=(1.1, 1.2, 1.3, 1.4, 1.5, 1.6),
                               arm_friction=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
    return dataclasses.replace(cfg, thrower=side(cfg.thrower, 2.0), catcher=side(cfg.catcher, 3.0), twin=twin)


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
        assert float(limit.get("velocity")) == side_cfg.velocity_limit[k]
        if k < 6:
            assert float(limit.get("effort")) == (50.0, 50.0, 32.0, 32.0, 32.0, 20.0)[k]
            assert float(limit.get("velocity")) == 3.14
            # the original's URDF <dynamics damping="1.0" friction="1.0"> on every xArm joint
            dyn = j.find("dynamics")
            assert (float(dyn.get("damping")), float(dyn.get("friction"))) == (1.0, 1.0)
            assert (CFG.twin.arm_damping[k], CFG.twin.arm_friction[k]) == (1.0, 1.0)
        else:
            assert float(limit.get("effort")) == 5.0 and float(limit.get("velocity")) == 3.0
            assert j.find("dynamics") is None  # the original's Allegro joints have none
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


def test_urdf_takes_velocity_limits_and_dynamics_per_joint_by_name():
    cfg = with_distinct_joint_values()
    velocity, arm = by_name(cfg, "velocity_limit"), {}
    for side in SIDES:
        arm.update({n: k for k, n in enumerate(getattr(cfg, side).arm.joints)})
        joints = {j.get("name"): j for j in ET.fromstring(side_urdf(cfg, side)).findall("joint")}
        for name in getattr(cfg, side).joint_names:
            j = joints[urdf_joint_name(name)]
            assert float(j.find("limit").get("velocity")) == velocity[name], name
            if name in arm:
                dyn = j.find("dynamics")
                assert float(dyn.get("damping")) == cfg.twin.arm_damping[arm[name]]
                assert float(dyn.get("friction")) == cfg.twin.arm_friction[arm[name]]
    assert velocity["catcher/joint_13.0"] == pytest.approx(4.05)  # the 6th hand slot: thumb joint_13.0


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

    twin = twin_reset()
    tm, td = twin.model, twin.data
    np.testing.assert_allclose(twin.joint_positions()[SIDES.index(side) * 22:][:22], clamped_default(side))
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


@pytest.mark.parametrize("side", SIDES)
def test_collapsed_bodies_have_mujocos_fused_masses_and_inertias(side):
    """With fixed joints merged (MuJoCo's ``fusestatic``, IsaacGym's ``collapse_fixed_joints``), every
    moving body has the mass, centre of mass and inertia tensor of :func:`collapsed_bodies` +
    :func:`merged_inertial`: link6 carries the palm, each distal link its tip."""
    m = mujoco.MjModel.from_xml_string(side_urdf(CFG, side))  # fusestatic: fixed children merged
    bodies = collapsed_bodies(side)
    assert list(bodies)[:7] == ["link_base", "link1", "link2", "link3", "link4", "link5", "link6"] and len(bodies) == 23
    assert [p.link for p in bodies["link6"]] == ["link6", "base_link", "palm", "palm_center"]
    assert [p.link for p in bodies["link_15.0"]] == ["link_15.0", "link_15.0_tip"]
    assert {m.body(i).name for i in range(1, m.nbody)} == set(bodies) - {"link_base"}  # link_base fused into the world
    for name, parts in bodies.items():
        if name == "link_base":
            continue
        mass, com, inertia = merged_inertial(parts, np.ones(len(parts)))
        b = m.body(name).id
        assert mass == pytest.approx(m.body_mass[b], rel=1e-12), name
        np.testing.assert_allclose(com, m.body_ipos[b], atol=1e-12, err_msg=name)
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, m.body_iquat[b])
        rot = rot.reshape(3, 3)
        np.testing.assert_allclose(inertia, rot @ np.diag(m.body_inertia[b]) @ rot.T, rtol=0,
                                   atol=1e-9 * np.abs(inertia).max(), err_msg=name)
    assert sum(p.mass for p in bodies["link6"]) == pytest.approx(0.1096 + 0.4154 + 2 * FRAME_MASS)
    assert {p.link: p.collisions for p in bodies["link6"]} == {"link6": 1, "base_link": 1, "palm": 0, "palm_center": 0}


def test_merged_inertial_scales_parts():
    parts = collapsed_bodies("thrower")["link6"]
    mass, com, inertia = merged_inertial(parts, np.ones(4))
    m2, c2, i2 = merged_inertial(parts, np.full(4, 1.3))  # one factor: mass and inertia x 1.3, same com
    assert m2 == pytest.approx(1.3 * mass) and np.allclose(c2, com) and np.allclose(i2, 1.3 * inertia)
    m3, c3, _ = merged_inertial(parts, [1.0, 0.5, 1.0, 1.0])  # a lighter palm: the com moves to link6's
    assert m3 == pytest.approx(mass - 0.5 * 0.4154)
    assert np.linalg.norm(c3 - parts[0].com) < np.linalg.norm(com - parts[0].com)


def test_randomizable_links_are_the_mujoco_twins_thrower_links():
    assert randomizable_links("thrower") == Twin(CFG).thrower_links
    assert len(randomizable_links("thrower")) == 23 and "link_base" not in randomizable_links("thrower")


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
    DOFs in any other mode do not move; the object keeps its set velocity, without gravity.

    Assets: a URDF's revolute joints become DOFs (limits, ``<dynamics>`` damping and friction, in a
    scrambled order); its links become rigid bodies (in a scrambled order) -- with
    ``collapse_fixed_joints`` each moving link merged with its fixed descendants (mass, centre of
    mass and inertia combined here, independently of the adapter), whose shapes follow the body's
    own, each shape tagged with its URDF link (``_link``)."""


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


def _vec(v: _Vec3) -> np.ndarray:
    return np.array([v.x, v.y, v.z])


def _mat(m: _Mat33) -> np.ndarray:
    return np.array([_vec(m.x), _vec(m.y), _vec(m.z)])


def _to_mat33(a: np.ndarray) -> _Mat33:
    m = _Mat33()
    m.x, m.y, m.z = (_Vec3(*row) for row in np.asarray(a))
    return m


def _shape(link: str) -> _Ns:
    return _Ns(friction=0.5, rolling_friction=0.0, torsion_friction=0.0, restitution=0.0, _link=link)


def _body(name: str, mass: float, com, inertia) -> _Ns:
    return _Ns(name=name, mass=float(mass), com=_Vec3(*com), inertia=_to_mat33(inertia), flags=0,
               invMass=1.0 / mass, invInertia=_Mat33())


def _rotation(rpy) -> np.ndarray:
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, rpy_to_quat(rpy))
    return rot.reshape(3, 3)


def _origin_of(element) -> tuple:
    origin = element.find("origin")
    if origin is None:
        return np.zeros(3), np.eye(3)
    return np.array(floats(origin.get("xyz", "0 0 0"))), _rotation(floats(origin.get("rpy", "0 0 0")))


def urdf_parts(root) -> dict:
    """{link: (mass, com (3,), inertia (3, 3) about com, parent frame pose (R, p) or None, fixed
    parent or None, collisions)} of a parsed URDF: each link's own inertial, in its own frame."""
    parts = {}
    for link in root.findall("link"):
        inertial = link.find("inertial")
        p, r = _origin_of(inertial)
        i = inertial.find("inertia").attrib
        tensor = np.array([[float(i["ixx"]), float(i["ixy"]), float(i["ixz"])],
                           [float(i["ixy"]), float(i["iyy"]), float(i["iyz"])],
                           [float(i["ixz"]), float(i["iyz"]), float(i["izz"])]])
        parts[link.get("name")] = [float(inertial.find("mass").get("value")), p, r @ tensor @ r.T, None, None,
                                   len(link.findall("collision"))]
    for joint in root.findall("joint"):
        if joint.get("type") == "fixed":
            child = parts[joint.find("child").get("link")]
            child[3], child[4] = _origin_of(joint)[::-1], joint.find("parent").get("link")
    return parts


def merge_parts(parts: dict, body: str, scale: dict) -> tuple:
    """Mass, com and inertia (about com) in ``body``'s frame of ``body`` and its fixed descendants,
    each part's mass and inertia times ``scale.get(link, 1)``; and the parts in depth-first order."""
    members = []

    def visit(link, rot, pos):
        members.append((link, rot, pos))
        for child, (_, _, _, pose, parent, _) in parts.items():
            if parent == link:
                r, p = pose
                visit(child, rot @ r, rot @ p + pos)

    visit(body, np.eye(3), np.zeros(3))
    masses = np.array([parts[link][0] * scale.get(link, 1.0) for link, _, _ in members])
    coms = [rot @ parts[link][1] + pos for link, rot, pos in members]
    com = sum(m * c for m, c in zip(masses, coms)) / masses.sum()
    inertia = np.zeros((3, 3))
    for (link, rot, _), m, c in zip(members, masses, coms):
        d = c - com
        inertia += scale.get(link, 1.0) * rot @ parts[link][2] @ rot.T + m * (d @ d * np.eye(3) - np.outer(d, d))
    return masses.sum(), com, inertia, [link for link, _, _ in members]


class _Actor:
    def __init__(self, asset: dict, pose: _Transform, name: str, group: int, filter: int):
        self.asset, self.pose, self.name, self.group, self.filter = asset, pose, name, group, filter
        n = len(asset["dofs"])
        self.dof_names = [dof[0] for dof in asset["dofs"]]
        self.props = np.zeros(n, _DOF_PROPS)
        for i, (_, lo, hi, effort, velocity, damping, friction) in enumerate(asset["dofs"]):
            self.props[i] = (True, lo, hi, int(asset["options"].default_dof_drive_mode), velocity, effort, 0, damping,
                             friction, 0)
        self.state = np.zeros(n, _DOF_STATE)
        self.targets = np.zeros(n, np.float32)
        self.body_state = np.zeros(1, _BODY_STATE)
        self.body_state["pose"]["p"][0] = (pose.p.x, pose.p.y, pose.p.z)
        self.body_state["pose"]["r"][0] = (pose.r.x, pose.r.y, pose.r.z, pose.r.w)
        bodies = asset.get("bodies") or [(_body("body", 1.0, (0, 0, 0), np.eye(3)), [_shape("body")])]
        self.bodies = [copy.copy(body) for body, _ in bodies]
        self.shapes = [copy.copy(shape) for _, shapes in bodies for shape in shapes]
        self.shape_ranges, start = [], 0
        for _, shapes in bodies:
            self.shape_ranges.append(_Ns(start=start, count=len(shapes)))
            start += len(shapes)
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
        self.params, self.devices = self._copy_params(params), (compute_device, graphics_device)
        self.sims.append(object())
        return self.sims[-1]

    @staticmethod
    def _copy_params(params):
        """A copy like IsaacGym's (the sim keeps its own), keeping the enum values as they are."""
        out = _Ns(**vars(params))
        out.physx = _Ns(**vars(params.physx))
        return out

    def get_sim_params(self, sim):
        assert sim is self.sims[-1]
        return self._copy_params(self.params)

    def set_sim_params(self, sim, params):
        assert sim is self.sims[-1] and isinstance(params.gravity, _Vec3)
        self.params = self._copy_params(params)

    def add_ground(self, sim, params):
        self.ground = params

    def load_asset(self, sim, root, filename, options):
        tree = ET.parse(f"{root}/{filename}").getroot()
        dofs = []
        for j in tree.findall("joint"):
            if j.get("type") == "revolute":
                lim, dyn = j.find("limit"), j.find("dynamics")
                damping, friction = (0.0, 0.0) if dyn is None else (float(dyn.get("damping")), float(dyn.get("friction")))
                dofs.append((j.get("name"), *(float(lim.get(k)) for k in ("lower", "upper", "effort", "velocity")),
                             damping, friction))
        dofs.sort(key=lambda dof: dof[0][::-1])  # any order but the contract's: the adapter maps by name
        parts = urdf_parts(tree)
        collapse = getattr(options, "collapse_fixed_joints", False)
        bodies = []
        for name in sorted(parts, reverse=True):  # any order but the URDF's: the adapter maps by name
            if collapse and parts[name][4] is not None:
                continue  # merged into its parent
            if collapse:
                mass, com, inertia, members = merge_parts(parts, name, {})
            else:
                mass, com, inertia, members = parts[name][0], parts[name][1], parts[name][2], [name]
            shapes = [_shape(link) for link in members for _ in range(parts[link][5])]
            bodies.append((_body(name, mass, com, inertia), shapes))
        return {"kind": filename, "dofs": dofs, "bodies": bodies, "parts": parts, "options": copy.copy(options)}

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
        assert len(props) == len(self.actors[h].shapes)
        self.actors[h].shapes = [copy.copy(s) for s in props]
        return True

    def get_actor_rigid_body_properties(self, env, h):
        return [copy.copy(b) for b in self.actors[h].bodies]

    def set_actor_rigid_body_properties(self, env, h, props, recomputeInertia=False):
        assert len(props) == len(self.actors[h].bodies) and not recomputeInertia
        assert all(isinstance(b.com, _Vec3) and isinstance(b.inertia, _Mat33) for b in props)
        self.actors[h].bodies = [copy.copy(b) for b in props]
        return True

    def get_actor_rigid_body_names(self, env, h):
        return [b.name for b in self.actors[h].bodies]

    def get_actor_rigid_body_shape_indices(self, env, h):
        return [copy.copy(r) for r in self.actors[h].shape_ranges]

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
        CC_NEVER=object(), CC_LAST_SUBSTEP=object(), CC_ALL_SUBSTEPS=object(),
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


def dof_props(actor) -> dict:
    """{URDF joint name: DOF property row} of a stand-in actor."""
    return {n: actor.props[i] for i, n in enumerate(actor.dof_names)}


def test_stand_in_scene_drives_and_timing(fake_twin, fake_api):
    gym, api = fake_api.gym, fake_api
    p = gym.params
    # the original's simulation parameters: dt 1/60 s (control period / 3 at 20 Hz), 2 substeps of
    # 1/120 s = the MuJoCo twin's timestep
    assert CFG.control_period_s == pytest.approx(0.05)
    assert p.dt == pytest.approx(1 / 60) and p.substeps == 2 and p.dt / p.substeps == pytest.approx(CFG.twin.timestep_s)
    assert (p.gravity.x, p.gravity.y, p.gravity.z) == (0.0, 0.0, -9.81)
    x = p.physx
    assert x.solver_type == 1 and x.num_position_iterations == 8 and x.num_velocity_iterations == 0  # TGS, 8/0
    assert x.contact_offset == 0.002 and x.rest_offset == 0.0 and x.bounce_threshold_velocity == 0.2
    assert x.contact_collection is api.CC_LAST_SUBSTEP
    assert p.use_gpu_pipeline is False and x.use_gpu is False and gym.devices == (0, -1)
    assert gym.prepared and [a.name for a in gym.actors] == [
        "thrower", "thrower_pedestal", "catcher", "catcher_pedestal", "object"]
    velocity = by_name(CFG, "velocity_limit")
    tw = CFG.twin
    for side in SIDES:
        robot = gym.actor(side)
        opts = robot.asset["options"]
        assert opts.fix_base_link and opts.disable_gravity and opts.collapse_fixed_joints
        assert opts.thickness == 0.001 and opts.angular_damping == 0.01 and opts.use_physx_armature and opts.armature == 0.0
        assert opts.default_dof_drive_mode == int(_DriveMode.DOF_MODE_POS)
        assert robot.filter == igt.ROBOT_FILTER and gym.actor(f"{side}_pedestal").filter == igt.ROBOT_FILTER
        base = getattr(CFG, side)
        assert (robot.pose.p.x, robot.pose.p.y, robot.pose.p.z) == tuple(base.base_position)
        assert 2 * math.atan2(robot.pose.r.z, robot.pose.r.w) == pytest.approx(base.base_yaw)
        props = dof_props(robot)
        for k, joint in enumerate(("joint1", "joint2", "joint3", "joint4", "joint5", "joint6")):
            assert props[joint]["stiffness"] == pytest.approx(tw.arm_stiffness[k])
            assert props[joint]["damping"] == pytest.approx(tw.arm_damping[k]) == 1.0  # URDF <dynamics>
            assert props[joint]["friction"] == pytest.approx(tw.arm_friction[k]) == 1.0
            assert props[joint]["effort"] == pytest.approx(tw.arm_effort_limit[k])
            assert props[joint]["velocity"] == pytest.approx(velocity[f"{side}/{joint}"]) == pytest.approx(3.14)
        assert props["joint3"]["stiffness"] == 64.0 and props["joint3"]["effort"] == 32.0  # contract, robot-cell.md
        assert props["joint_9.0"]["stiffness"] == 30.0 and props["joint_9.0"]["damping"] == 1.0
        assert props["joint_9.0"]["effort"] == 5.0 and props["joint_9.0"]["velocity"] == pytest.approx(3.0)
        assert props["joint_9.0"]["friction"] == 0.0
        assert all(props[n]["driveMode"] == int(_DriveMode.DOF_MODE_POS) for n in props)
        assert all(props[n]["armature"] == 0.0 for n in props)
        assert robot.props["lower"][robot.dof_names.index("joint5")] == pytest.approx(base.arm.lower[4])
        # fixed joints collapsed: 23 bodies, link6 carries the palm
        bodies = {b.name: b for b in robot.bodies}
        assert set(bodies) == set(collapsed_bodies(side)) and "base_link" not in bodies and len(bodies) == 23
        assert bodies["link6"].mass == pytest.approx(0.1096 + 0.4154 + 2 * FRAME_MASS)
        assert all(shape.friction == igt.ROBOT_FRICTION == 1.0 for shape in robot.shapes)
    obj = gym.actor("object")
    assert obj.filter == 0 and obj.asset["kind"] == "box" and obj.asset["size"] == pytest.approx((0.05,) * 3)
    assert fake_twin.step() == pytest.approx(0.05) and gym.time == pytest.approx(0.05)  # 3 steps of 1/60 s
    assert fake_twin.advance(0.01) == pytest.approx(0.05 + 1 / 60)  # 0.01 s: 1 whole step of 1/60 s
    assert fake_twin.provides_effort
    assert fake_twin.thrower_links == Twin(CFG).thrower_links


def test_stand_in_dof_properties_per_joint_by_name(fake_api):
    """Velocity limits, arm damping and friction that differ per joint reach each DOF by its name
    (the stand-in orders DOFs differently from the contract), and equal the URDF's."""
    cfg = with_distinct_joint_values()
    velocity, tw = by_name(cfg, "velocity_limit"), cfg.twin
    with IsaacGymTwin(cfg):
        for side in SIDES:
            robot = fake_api.gym.actor(side)
            props = dof_props(robot)
            urdf = {dof[0]: dof for dof in robot.asset["dofs"]}  # (name, lo, hi, effort, velocity, damping, friction)
            side_cfg = getattr(cfg, side)
            for name in side_cfg.joint_names:
                row = props[urdf_joint_name(name)]
                assert row["velocity"] == pytest.approx(velocity[name]) == pytest.approx(urdf[urdf_joint_name(name)][4])
            for k, name in enumerate(side_cfg.arm.joints):
                row, u = props[urdf_joint_name(name)], urdf[urdf_joint_name(name)]
                assert row["damping"] == pytest.approx(tw.arm_damping[k]) == pytest.approx(u[5])
                assert row["friction"] == pytest.approx(tw.arm_friction[k]) == pytest.approx(u[6])
            for name in side_cfg.hand.joints:
                row = props[urdf_joint_name(name)]
                assert row["damping"] == tw.hand_damping and row["friction"] == 0.0
            assert props["joint_13.0"]["velocity"] == pytest.approx(3.05 if side == "thrower" else 4.05)


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
    fake_twin.step(2)  # 0.1 s
    np.testing.assert_allclose(fake_twin.object_position(), [0.1, 0.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(fake_twin.object_velocity(), [1.0, 0.0, 0.0], atol=1e-6)


def test_stand_in_place_object_keeps_the_robots_and_the_clock(fake_twin, fake_api):
    devices = isaacgym_devices(fake_twin)
    devices.bring_up()
    arm = devices.joint_groups[("thrower", "arm")]
    target = np.array(arm.info.lower) + 0.7 * (np.array(arm.info.upper) - np.array(arm.info.lower))
    arm.command(target, fake_twin.time)
    fake_twin.step(4)
    fake_twin.set_object_state(np.array([0.5, 0.5, 0.1]), np.array([0.0, -2.0, 0.0]))
    q, t, episode = fake_twin.joint_positions(), fake_twin.time, fake_twin.episode
    targets = fake_twin.position_targets("thrower")
    assert not np.allclose(targets[:6], clamped_default("thrower")[:6])  # the arm was commanded away
    fake_twin.place_object(EpisodeParams(mass_factor=1.2), object_start=np.array([0.02, -0.39, 0.46]))
    np.testing.assert_array_equal(fake_twin.joint_positions(), q)
    assert fake_twin.time == t and fake_twin.episode == episode + 1
    np.testing.assert_allclose(fake_twin.object_position(), [0.02, -0.39, 0.46], atol=1e-6)
    np.testing.assert_array_equal(fake_twin.object_velocity(), np.zeros(3))
    assert fake_api.gym.actor("object").bodies[0].mass == pytest.approx(0.22867 * 1.2)
    np.testing.assert_array_equal(fake_twin.position_targets("thrower"), targets)  # targets kept
    fake_twin.place_object()
    np.testing.assert_allclose(fake_twin.object_position(), CFG.object.start_position, atol=1e-6)
    assert fake_api.gym.actor("object").bodies[0].mass == pytest.approx(0.22867)


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
    props = dof_props(thrower)
    assert props["joint_5.0"]["stiffness"] == pytest.approx(36.0) and props["joint_5.0"]["damping"] == pytest.approx(0.5)
    assert props["joint2"]["stiffness"] == 100.0 and props["joint2"]["damping"] == CFG.twin.arm_damping[1]  # arms unchanged
    fake_twin.reset()
    assert obj.scale == 1.0 and obj.bodies[0].mass == pytest.approx(0.22867) and obj.shapes[0].friction == 1.0
    props = dof_props(gym.actor("thrower"))
    assert props["joint_5.0"]["stiffness"] == 30.0 and props["joint_5.0"]["damping"] == 1.0


def thrower_randomization(**links) -> ThrowerRandomization:
    """Per-joint factors and offsets that differ per contract slot k (0..21)."""
    n = 22
    lower = [0.01 * (k % 3) for k in range(n)]
    lower[0] = 0.01  # joint1 [-0.000, 0.001]: would cross -> keeps its nominal limits (also joint4..6)
    return ThrowerRandomization(
        stiffness_scale=tuple(0.8 + 0.02 * k for k in range(n)),
        damping_scale=tuple(0.4 + 0.1 * k for k in range(n)),
        lower_offset=tuple(lower),
        upper_offset=tuple(-0.005 * (k % 4) for k in range(n)),
        link_mass_scale=links.get("mass", {}),
        link_friction_scale=links.get("friction", {}),
    )


def test_stand_in_thrower_randomization_and_gravity_reach_the_sim(fake_twin, fake_api):
    """EpisodeParams.thrower: per joint (contract slot -> DOF by name) stiffness and damping factors
    (on top of the hand scales) and limit offsets; per URDF link mass (a merged body gets its
    parts' combined mass, centre of mass and inertia) and shape friction; the catcher untouched.
    gravity_offset: added to the sim's gravity. A reset without them restores every nominal value."""
    gym = fake_api.gym
    thrower, catcher = gym.actor("thrower"), gym.actor("catcher")
    nominal_dofs = {side: dof_props(gym.actor(side)) for side in SIDES}
    nominal_dofs = {side: {n: row.copy() for n, row in rows.items()} for side, rows in nominal_dofs.items()}
    nominal_bodies = {b.name: copy.deepcopy(b) for b in thrower.bodies}
    catcher_bodies = copy.deepcopy(catcher.bodies)
    mass = {"link2": 1.3, "link6": 1.2, "base_link": 0.6, "link_3.0": 0.8}
    friction = {"link6": 0.9, "base_link": 1.2, "link_1.0": 0.75}
    t = thrower_randomization(mass=mass, friction=friction)
    fake_twin.reset(EpisodeParams(thrower=t, hand_stiffness_scale=1.1, gravity_offset=(0.1, -0.2, 0.3)))

    g = gym.params.gravity
    assert (g.x, g.y, g.z) == pytest.approx((0.1, -0.2, -9.51))
    props = dof_props(thrower)
    for k, name in enumerate(CFG.thrower.joint_names):
        row, nom = props[urdf_joint_name(name)], nominal_dofs["thrower"][urdf_joint_name(name)]
        hand = 1.1 if k >= 6 else 1.0
        assert row["stiffness"] == pytest.approx(nom["stiffness"] * t.stiffness_scale[k] * hand, rel=1e-6), name
        assert row["damping"] == pytest.approx(nom["damping"] * t.damping_scale[k], rel=1e-6), name
        crossing = nom["lower"] + t.lower_offset[k] >= nom["upper"] + t.upper_offset[k]
        assert crossing == (k in (0, 3, 4, 5)), name  # joint1, 4, 5, 6 have ranges of 0.001 rad
        if crossing:  # the offsets would cross the limits: nominal kept
            assert (row["lower"], row["upper"]) == (nom["lower"], nom["upper"])
        else:
            assert row["lower"] == pytest.approx(nom["lower"] + t.lower_offset[k], abs=1e-6), name
            assert row["upper"] == pytest.approx(nom["upper"] + t.upper_offset[k], abs=1e-6), name
        assert row["velocity"] == nom["velocity"] and row["effort"] == nom["effort"] and row["friction"] == nom["friction"]
    for name, row in dof_props(catcher).items():  # the catcher: only the hand scale
        nom = nominal_dofs["catcher"][name]
        hand = 1.1 if name.startswith("joint_") else 1.0
        assert row["stiffness"] == pytest.approx(nom["stiffness"] * hand) and row["damping"] == nom["damping"]
        assert (row["lower"], row["upper"]) == (nom["lower"], nom["upper"])

    bodies = {b.name: b for b in thrower.bodies}
    # one part with mass: mass and inertia x factor, centre of mass unchanged
    assert bodies["link2"].mass == pytest.approx(1.71 * 1.3)
    np.testing.assert_allclose(_mat(bodies["link2"].inertia), 1.3 * _mat(nominal_bodies["link2"].inertia), rtol=1e-9)
    np.testing.assert_allclose(_vec(bodies["link2"].com), _vec(nominal_bodies["link2"].com), atol=1e-12)
    # link_3.0 and its tip frame: the frame follows its link's factor
    assert bodies["link_3.0"].mass == pytest.approx((0.131691 + FRAME_MASS) * 0.8)
    # link6 (0.1096 kg) + base_link (palm, 0.4154 kg) + palm frames: combined (the stand-in's own merge)
    parts = thrower.asset["parts"]
    scale = {"link6": 1.2, "base_link": 0.6, "palm": 0.6, "palm_center": 0.6}
    m6, c6, i6, _ = merge_parts(parts, "link6", scale)
    assert bodies["link6"].mass == pytest.approx(m6) == pytest.approx(0.1096 * 1.2 + (0.4154 + 2 * FRAME_MASS) * 0.6)
    np.testing.assert_allclose(_vec(bodies["link6"].com), c6, atol=1e-12)
    np.testing.assert_allclose(_mat(bodies["link6"].inertia), i6, rtol=0, atol=1e-9 * np.abs(i6).max())
    assert not np.allclose(c6, _vec(nominal_bodies["link6"].com))
    for name, body in bodies.items():  # the other bodies keep their nominal values
        if name not in ("link2", "link6", "link_3.0"):
            assert body.mass == nominal_bodies[name].mass, name
    assert [b.mass for b in catcher.bodies] == [b.mass for b in catcher_bodies]
    for shape in thrower.shapes:  # friction per URDF link
        assert shape.friction == pytest.approx(friction.get(shape._link, 1.0)), shape._link
    assert all(shape.friction == 1.0 for shape in catcher.shapes)
    assert {s._link for s in thrower.shapes} >= {"link6", "base_link", "link_1.0"}

    fake_twin.reset()
    g = gym.params.gravity
    assert (g.x, g.y, g.z) == (0.0, 0.0, -9.81)
    for name, row in dof_props(thrower).items():
        nom = nominal_dofs["thrower"][name]
        assert all(row[f] == nom[f] for f in ("stiffness", "damping", "lower", "upper")), name
    for body in thrower.bodies:
        nom = nominal_bodies[body.name]
        assert body.mass == pytest.approx(nom.mass, rel=1e-12)
        np.testing.assert_allclose(_mat(body.inertia), _mat(nom.inertia), rtol=1e-12, atol=0)
        np.testing.assert_allclose(_vec(body.com), _vec(nom.com), atol=1e-15)
    assert all(shape.friction == 1.0 for shape in thrower.shapes)


def test_stand_in_sampled_training_params_apply(fake_twin, fake_api):
    params = EpisodeParams.sample_training(np.random.default_rng(3), fake_twin.thrower_links)
    fake_twin.reset(params)
    g = fake_api.gym.params.gravity
    assert (g.x, g.y, g.z) == pytest.approx(tuple(np.add((0.0, 0.0, -9.81), params.gravity_offset)))
    bodies = {b.name: b for b in fake_api.gym.actor("thrower").bodies}
    assert bodies["link1"].mass == pytest.approx(2.16 * params.thrower.link_mass_scale["link1"])


def test_stand_in_refuses_bad_thrower_randomization(fake_twin):
    with pytest.raises(ValueError, match="'link_99'"):
        fake_twin.reset(EpisodeParams(thrower=thrower_randomization(mass={"link_99": 1.1})))
    with pytest.raises(ValueError, match="'link_base'"):  # fixed to the pedestal: not randomizable
        fake_twin.reset(EpisodeParams(thrower=thrower_randomization(friction={"link_base": 1.1})))
    short = dataclasses.replace(thrower_randomization(), stiffness_scale=(1.0,) * 16)
    with pytest.raises(ValueError, match="stiffness_scale needs 22"):
        fake_twin.reset(EpisodeParams(thrower=short))


def test_stand_in_devices_map_joints_by_name(fake_twin, fake_api):
    devices = isaacgym_devices(fake_twin)
    devices.bring_up()
    for (side, group), dev in devices.joint_groups.items():
        lo, hi = np.array(dev.info.lower), np.array(dev.info.upper)
        # distinct per joint, within one step's allowed change (the command gate) of the present pose
        q0 = dev.read(fake_twin.time).position
        target = np.clip(q0 + np.linspace(-0.12, 0.12, dev.info.size), lo, hi)
        sent = dev.command(target, fake_twin.time)
        np.testing.assert_allclose(sent, target, atol=1e-9)
        robot = fake_api.gym.actor(side)
        for name, value in zip(dev.info.names, sent):
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
    gym_twin.step(60)  # 3 s at 20 Hz
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
    t = gym_twin.step(6) - t0  # 0.3 s
    analytic = x0 + v0 * t + 0.5 * np.array([0.0, 0.0, -9.81]) * t**2
    assert np.linalg.norm(gym_twin.object_position() - analytic) < 5e-3


def test_isaacgym_gravity_offset_acts_on_the_object(gym_twin):
    """gravity_offset (0.3, -0.2, 0.4) m/s^2: the free flight follows the shifted gravity."""
    require_isaacgym()
    offset = np.array([0.3, -0.2, 0.4])
    gym_twin.reset(EpisodeParams(gravity_offset=tuple(offset)))
    try:
        x0, v0 = np.array([1.2, 1.0, 1.5]), np.array([-0.8, -2.0, 2.5])
        gym_twin.set_object_state(x0, v0)
        t0 = gym_twin.time
        t = gym_twin.step(6) - t0
        analytic = x0 + v0 * t + 0.5 * (np.array([0.0, 0.0, -9.81]) + offset) * t**2
        assert np.linalg.norm(gym_twin.object_position() - analytic) < 5e-3
    finally:
        gym_twin.reset()


def test_isaacgym_sim_parameters_assets_and_dof_properties(gym_twin):
    """The original's sim parameters as IsaacGym reports them; the DOFs in the contract's slot order
    (IsaacGym's depth-first order with siblings sorted by name); the merged bodies; DOF properties
    per joint by name from the config."""
    require_isaacgym()
    gym, env, gymapi = gym_twin.gym, gym_twin.env, gym_twin.gymapi
    p = gym.get_sim_params(gym_twin.sim)
    assert p.dt == pytest.approx(1 / 60) and p.substeps == 2
    assert p.physx.solver_type == 1 and p.physx.num_position_iterations == 8 and p.physx.num_velocity_iterations == 0
    assert p.physx.contact_offset == pytest.approx(0.002) and p.physx.rest_offset == 0.0
    assert p.physx.bounce_threshold_velocity == pytest.approx(0.2)
    assert p.physx.contact_collection == gymapi.CC_LAST_SUBSTEP
    velocity, tw = by_name(CFG, "velocity_limit"), CFG.twin
    for side in SIDES:
        handle = gym.find_actor_handle(env, side)
        side_cfg = getattr(CFG, side)
        assert list(gym.get_actor_dof_names(env, handle)) == [urdf_joint_name(n) for n in side_cfg.joint_names]
        assert sorted(gym.get_actor_rigid_body_names(env, handle)) == sorted(collapsed_bodies(side))
        props = gym.get_actor_dof_properties(env, handle)
        for k, name in enumerate(side_cfg.joint_names):
            i = gym.find_actor_dof_index(env, handle, urdf_joint_name(name), gymapi.DOMAIN_ACTOR)
            assert props["velocity"][i] == pytest.approx(velocity[name])
            if k < 6:
                assert props["damping"][i] == pytest.approx(tw.arm_damping[k])
                assert props["friction"][i] == pytest.approx(tw.arm_friction[k])
                assert props["stiffness"][i] == pytest.approx(tw.arm_stiffness[k])
            else:
                assert props["damping"][i] == pytest.approx(tw.hand_damping) and props["friction"][i] == 0.0
        bodies = gym.get_actor_rigid_body_properties(env, handle)
        link6 = gym.get_actor_rigid_body_names(env, handle).index("link6")
        assert bodies[link6].mass == pytest.approx(0.1096 + 0.4154 + 2 * FRAME_MASS, rel=1e-5)


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


def test_isaacgym_thrower_randomization_reaches_the_sim(gym_twin):
    require_isaacgym()
    gym, env, gymapi = gym_twin.gym, gym_twin.env, gym_twin.gymapi
    handle = gym.find_actor_handle(env, "thrower")
    names = gym.get_actor_rigid_body_names(env, handle)
    nominal = [b.mass for b in gym.get_actor_rigid_body_properties(env, handle)]
    t = thrower_randomization(mass={"link2": 1.3, "base_link": 0.6}, friction={"link_1.0": 0.75})
    gym_twin.reset(EpisodeParams(thrower=t, gravity_offset=(0.1, -0.2, 0.3)))
    try:
        props = gym.get_actor_dof_properties(env, handle)
        i = gym.find_actor_dof_index(env, handle, "joint_13.0", gymapi.DOMAIN_ACTOR)
        k = CFG.thrower.joint_names.index("thrower/joint_13.0")
        assert props["stiffness"][i] == pytest.approx(30.0 * t.stiffness_scale[k], rel=1e-5)
        assert props["damping"][i] == pytest.approx(1.0 * t.damping_scale[k], rel=1e-5)
        masses = gym.get_actor_rigid_body_properties(env, handle)
        assert masses[names.index("link2")].mass == pytest.approx(1.71 * 1.3, rel=1e-5)
        assert masses[names.index("link6")].mass == pytest.approx(0.1096 + (0.4154 + 2 * FRAME_MASS) * 0.6, rel=1e-5)
        g = gym.get_sim_params(gym_twin.sim).gravity
        assert (g.x, g.y, g.z) == pytest.approx((0.1, -0.2, -9.51), abs=1e-6)
    finally:
        gym_twin.reset()
    assert [b.mass for b in gym.get_actor_rigid_body_properties(env, handle)] == pytest.approx(nominal, rel=1e-6)
