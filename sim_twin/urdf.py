"""URDF descriptions of the cell's two robots, generated from the same facts as the MuJoCo twin.

One URDF per side (``thrower`` / ``catcher``): the xArm6 with its Allegro hand, rooted at
``link_base`` (the arm base; a simulator fixes it at the side's base pose and yaw). Built from

- :data:`handover.sim_twin.kinematics.CHAINS` (joint origins, axes, fixed frames),
- :data:`handover.sim_twin.kinematics.LINK_MASS` (link masses, robot-cell.md),
- :func:`handover.sim_twin.model.link_collision_shapes` (the MuJoCo twin's collision shapes),
- the cell config: the training joint limits; the arm effort limits of ``twin.arm_effort_limit``
  (robot-cell.md's 50, 50, 32, 32, 32, 20 N*m) and the hand's ``twin.hand_effort_limit`` (the
  contract's 5 N*m); every joint's ``velocity_limit`` (rad/s, by joint name: arm 3.14, hand 3.0);
  the arm joints' ``<dynamics damping friction>`` from ``twin.arm_damping`` / ``twin.arm_friction``
  (the original's URDF: 1.0 and 1.0 on every xArm joint; its Allegro joints have none).

Names: joints and links carry the URDF names of robot-cell.md (``joint2``, ``joint_12.0``,
``link_3.0_tip``, ...); the side is not in them (a simulator puts it in the actor name). The cell
config's joint ``thrower/joint_12.0`` is the URDF joint ``joint_12.0`` of the thrower's URDF.

Shapes (link frames, as in the twin): URDF has no capsule, so a capsule from ``a`` to ``b`` with
radius ``r`` is written as a cylinder from ``a`` to ``b`` plus a sphere of radius ``r`` at each end:
their union *is* the capsule, so collisions match the twin's exactly. Cylinders, spheres and boxes
are written as they are. Every shape is written twice, as ``<collision>`` and as ``<visual>``.

Inertials: each moving link, ``link_base`` and the hand's ``base_link`` get their LINK_MASS with the
inertia of a solid body of uniform density filling the link's *first* shape (the shape that carries
the mass in the MuJoCo twin; MuJoCo computes the same numbers from it), about that shape's centre.
The fixed frames (``palm``, ``palm_center``, ``link_N.0_tip``; sites in the MuJoCo twin) are links
without geometry and with a token mass of :data:`FRAME_MASS` (1 g): simulators that import URDF
(IsaacGym among them) expect every link to have a positive mass. ``<dynamics>`` only on the arm
joints, as in the original's URDF (IsaacGym reads it into the DOF's damping and friction; the
adapter sets the same numbers explicitly); the drives' stiffness is set by the simulator.

Merged bodies: a simulator that merges links joined by fixed joints (IsaacGym's
``collapse_fixed_joints``, which the original uses) makes one rigid body of each moving link and
its fixed descendants: ``link6`` carries ``base_link`` (the Allegro palm), ``palm`` and
``palm_center``; each ``link_N.0`` carries its ``link_N.0_tip``. :func:`collapsed_bodies` lists
the parts of every merged body with their inertials in the body frame, and
:func:`merged_inertial` combines them with per-link mass factors (the per-link randomization).

Units: m, rad, kg, kg*m^2, N*m, rad/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import quoteattr

import numpy as np

from handover.runtime.cell_config import CellConfig
from handover.sim_twin.kinematics import CHAINS, LINK_MASS, Link
from handover.sim_twin.model import link_collision_shapes

SIDES = ("thrower", "catcher")

FRAME_MASS = 1e-3  # kg, token mass of the geometry-less fixed frames (palm, palm_center, tips)
FRAME_INERTIA = 1e-9  # kg*m^2, their (isotropic) inertia: a 1 g ball of ~1.6 mm radius

_COLORS = {  # rgba per side: arm, hand (the MuJoCo twin's colours)
    "thrower": ((0.85, 0.85, 0.88, 1.0), (0.15, 0.15, 0.17, 1.0)),
    "catcher": ((0.80, 0.86, 0.95, 1.0), (0.12, 0.16, 0.25, 1.0)),
}


# -------------------------------------------------------------------------------------------------
# Numbers and frames


def _num(v: float) -> str:
    """Shortest text that reads back as the same float (``repr``), never numpy's ``np.float64(...)``."""
    v = float(v)
    return "0" if v == 0.0 else repr(v)


def _vec(values: Sequence[float]) -> str:
    return " ".join(_num(v) for v in values)


def z_to_direction(direction: Sequence[float]) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """Rotation ``R`` taking the z axis onto the unit vector along ``direction``, and its URDF
    roll-pitch-yaw (``R = Rz(yaw) Ry(pitch) Rx(roll)``; yaw is always 0 here).

    With ``R = Ry(p) Rx(r)``: ``R e_z = (cos r sin p, -sin r, cos r cos p)``."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    roll = float(np.arctan2(-d[1], np.hypot(d[0], d[2])))
    pitch = float(np.arctan2(d[0], d[2])) if np.hypot(d[0], d[2]) > 1e-12 else 0.0
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    return ry @ rx, (roll, pitch, 0.0)


def rpy_matrix(rpy: Sequence[float]) -> np.ndarray:
    """The rotation of a URDF ``rpy`` (fixed axes X, Y, Z: ``R = Rz(yaw) Ry(pitch) Rx(roll)``)."""
    r, p, y = (float(v) for v in rpy)
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


# -------------------------------------------------------------------------------------------------
# Shapes: inertia and XML


def shape_inertia(shape: tuple, mass: float) -> Tuple[np.ndarray, np.ndarray]:
    """Centre of mass (3,) and inertia tensor (3, 3) about it, in the link frame, of a solid of
    uniform density and mass ``mass`` (kg) filling ``shape`` (a
    :func:`~handover.sim_twin.model.link_collision_shapes` entry). Capsules include their two
    hemispherical caps (MuJoCo's exact formula)."""
    kind, a, b, size = shape
    a = np.asarray(a, float)
    if kind == "sphere":
        return a, np.eye(3) * (0.4 * mass * size**2)
    if kind == "box":
        full = 2.0 * np.asarray(b, float)
        x2, y2, z2 = full**2
        return a, np.diag([y2 + z2, x2 + z2, x2 + y2]) * (mass / 12.0)
    if kind not in ("capsule", "cylinder"):
        raise ValueError(f"unknown shape kind {kind!r}")
    b = np.asarray(b, float)
    length, r = float(np.linalg.norm(b - a)), float(size)
    if kind == "cylinder":
        axial, transverse = 0.5 * mass * r**2, mass * (3 * r**2 + length**2) / 12.0
    else:
        v_cyl, v_sph = np.pi * r**2 * length, 4.0 / 3.0 * np.pi * r**3
        m_cyl, m_sph = mass * v_cyl / (v_cyl + v_sph), mass * v_sph / (v_cyl + v_sph)
        axial = 0.5 * m_cyl * r**2 + 0.4 * m_sph * r**2
        transverse = (m_cyl * (length**2 / 12.0 + r**2 / 4.0)
                      + m_sph * (0.4 * r**2 + length**2 / 4.0 + 3.0 * length * r / 8.0))
    rot, _ = z_to_direction(b - a)
    return 0.5 * (a + b), rot @ np.diag([transverse, transverse, axial]) @ rot.T


def _geometries(shape: tuple) -> List[Tuple[np.ndarray, Tuple[float, float, float], str]]:
    """URDF geometries (origin xyz, origin rpy, geometry element) whose union is ``shape``."""
    kind, a, b, size = shape
    a = np.asarray(a, float)
    if kind == "sphere":
        return [(a, (0.0, 0.0, 0.0), f"<sphere radius={quoteattr(_num(size))}/>")]
    if kind == "box":
        full = 2.0 * np.asarray(b, float)
        return [(a, (0.0, 0.0, 0.0), f"<box size={quoteattr(_vec(full))}/>")]
    b = np.asarray(b, float)
    _, rpy = z_to_direction(b - a)
    length = float(np.linalg.norm(b - a))
    out = [(0.5 * (a + b), rpy, f"<cylinder radius={quoteattr(_num(size))} length={quoteattr(_num(length))}/>")]
    if kind == "capsule":  # URDF has no capsule: cylinder + a sphere at each end
        out += [(end, (0.0, 0.0, 0.0), f"<sphere radius={quoteattr(_num(size))}/>") for end in (a, b)]
    return out


def _origin(xyz: Sequence[float], rpy: Sequence[float]) -> str:
    return f"<origin xyz={quoteattr(_vec(xyz))} rpy={quoteattr(_vec(rpy))}/>"


def _inertial(com: Sequence[float], mass: float, inertia: np.ndarray) -> str:
    i = np.where(np.abs(inertia) > 1e-12 * np.abs(inertia).max(), inertia, 0.0)  # no 1e-20 rounding noise
    return (
        f"    <inertial>\n      {_origin(com, (0, 0, 0))}\n      <mass value={quoteattr(_num(mass))}/>\n"
        f"      <inertia ixx={quoteattr(_num(i[0, 0]))} ixy={quoteattr(_num(i[0, 1]))} ixz={quoteattr(_num(i[0, 2]))} "
        f"iyy={quoteattr(_num(i[1, 1]))} iyz={quoteattr(_num(i[1, 2]))} izz={quoteattr(_num(i[2, 2]))}/>\n"
        f"    </inertial>\n"
    )


def link_inertial(name: str, shapes: Optional[List[tuple]]) -> Tuple[float, np.ndarray, np.ndarray]:
    """Mass (kg), centre of mass (3,) and inertia about it (3, 3), in the link frame, that the URDF
    gives link ``name`` with collision ``shapes`` (module docstring: the first shape carries
    LINK_MASS; a geometry-less frame gets the token mass)."""
    if not shapes:
        return FRAME_MASS, np.zeros(3), np.eye(3) * FRAME_INERTIA
    com, inertia = shape_inertia(shapes[0], LINK_MASS[name])
    return LINK_MASS[name], com, inertia


def _link(name: str, shapes: Optional[List[tuple]], material: str) -> str:
    mass, com, inertia = link_inertial(name, shapes)
    body = _inertial(com, mass, inertia)
    if shapes:
        for k, shape in enumerate(shapes):
            for j, (xyz, rpy, geometry) in enumerate(_geometries(shape)):
                tag = f"{name}_{k}_{j}"
                body += (f"    <visual name={quoteattr(tag)}>\n      {_origin(xyz, rpy)}\n"
                         f"      <geometry>{geometry}</geometry>\n      <material name={quoteattr(material)}/>\n"
                         f"    </visual>\n")
                body += (f"    <collision name={quoteattr(tag)}>\n      {_origin(xyz, rpy)}\n"
                         f"      <geometry>{geometry}</geometry>\n    </collision>\n")
    return f"  <link name={quoteattr(name)}>\n{body}  </link>\n"


# -------------------------------------------------------------------------------------------------
# Joints


def urdf_joint_name(cell_joint: str) -> str:
    """The URDF joint name of a cell config joint name: ``"catcher/joint_12.0"`` -> ``"joint_12.0"``."""
    return cell_joint.split("/", 1)[1] if "/" in cell_joint else cell_joint


def joint_limits(cfg: CellConfig, side: str) -> Dict[str, Tuple[float, float, float, float]]:
    """``{urdf joint: (lower rad, upper rad, effort N*m, velocity rad/s)}`` of one side's 22 joints,
    each from the config entry of that joint's name."""
    side_cfg = getattr(cfg, side)
    tw = cfg.twin
    out = {}
    arm, hand = side_cfg.arm, side_cfg.hand
    for i, (name, lo, hi, vel) in enumerate(zip(arm.joints, arm.lower, arm.upper, arm.velocity_limit)):
        out[urdf_joint_name(name)] = (lo, hi, tw.arm_effort_limit[i], vel)
    for name, lo, hi, vel in zip(hand.joints, hand.lower, hand.upper, hand.velocity_limit):
        out[urdf_joint_name(name)] = (lo, hi, tw.hand_effort_limit, vel)
    return out


def joint_dynamics(cfg: CellConfig, side: str) -> Dict[str, Tuple[float, float]]:
    """``{urdf joint: (damping N*m*s/rad, friction N*m)}`` of the arm joints: the URDF ``<dynamics>``
    of the original (``twin.arm_damping``, ``twin.arm_friction``). The hand joints have none."""
    tw = cfg.twin
    arm = getattr(cfg, side).arm
    return {urdf_joint_name(name): (tw.arm_damping[i], tw.arm_friction[i]) for i, name in enumerate(arm.joints)}


def _joint(link: Link, limits: Dict[str, Tuple[float, float, float, float]],
           dynamics: Dict[str, Tuple[float, float]]) -> str:
    head = (f"  <joint name={quoteattr(link.joint)} type={quoteattr('fixed' if link.axis is None else 'revolute')}>\n"
            f"    <parent link={quoteattr(link.parent)}/>\n    <child link={quoteattr(link.child)}/>\n"
            f"    {_origin(link.xyz, link.rpy)}\n")
    if link.axis is not None:
        if link.joint not in limits:
            raise ValueError(f"URDF joint {link.joint!r} has no limits in the cell config")
        lo, hi, effort, velocity = limits[link.joint]
        head += (f"    <axis xyz={quoteattr(_vec(link.axis))}/>\n"
                 f"    <limit lower={quoteattr(_num(lo))} upper={quoteattr(_num(hi))} "
                 f"effort={quoteattr(_num(effort))} velocity={quoteattr(_num(velocity))}/>\n")
        if link.joint in dynamics:
            damping, friction = dynamics[link.joint]
            head += f"    <dynamics damping={quoteattr(_num(damping))} friction={quoteattr(_num(friction))}/>\n"
    return head + "  </joint>\n"


# -------------------------------------------------------------------------------------------------
# Public


def side_urdf(cfg: CellConfig, side: str) -> str:
    """The URDF text of one side's robot (``side``: ``"thrower"`` or ``"catcher"``)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    chain = CHAINS[side]
    shapes = link_collision_shapes(side)
    limits = joint_limits(cfg, side)
    dynamics = joint_dynamics(cfg, side)
    revolute = {link.joint for link in chain if link.axis is not None}
    if revolute != set(limits):
        raise ValueError(f"{side}: the kinematic chain's joints {sorted(revolute)} differ from the config's {sorted(limits)}")
    arm_rgba, hand_rgba = _COLORS[side]
    arm_links = {"link_base", "link1", "link2", "link3", "link4", "link5", "link6"}
    out = [
        '<?xml version="1.0"?>\n',
        "<!-- Generated by handover.sim_twin.urdf from the cell's kinematic tables; do not edit. -->\n",
        f"<robot name={quoteattr(f'{side}_xarm6_allegro')}>\n",
        f'  <material name="{side}_arm"><color rgba={quoteattr(_vec(arm_rgba))}/></material>\n',
        f'  <material name="{side}_hand"><color rgba={quoteattr(_vec(hand_rgba))}/></material>\n',
        _link("link_base", shapes["link_base"], f"{side}_arm"),
    ]
    for link in chain:
        material = f"{side}_arm" if link.child in arm_links else f"{side}_hand"
        out.append(_link(link.child, shapes.get(link.child), material))
        out.append(_joint(link, limits, dynamics))
    out.append("</robot>\n")
    return "".join(out)


def object_urdf(cfg: CellConfig) -> str:
    """URDF of the twin's nominal object (``cfg.twin.object``: shape, size, mass) as one free link
    ``object`` with its solid inertia. Used for the cylinder, which IsaacGym has no primitive for
    (radius ``size``, height ``2 * size``, axis z, like the MuJoCo twin's)."""
    obj = cfg.twin.object
    s = obj.size
    shape = {
        "sphere": ("sphere", (0, 0, 0), None, s),
        "cube": ("box", (0, 0, 0), (s, s, s), None),
        "cylinder": ("cylinder", (0, 0, -s), (0, 0, s), s),
    }[obj.shape]
    com, inertia = shape_inertia(shape, obj.mass)
    geometries = _geometries(shape)
    body = _inertial(com, obj.mass, inertia)
    for xyz, rpy, geometry in geometries:
        body += (f"    <visual>\n      {_origin(xyz, rpy)}\n      <geometry>{geometry}</geometry>\n"
                 f'      <material name="object"/>\n    </visual>\n')
        body += f"    <collision>\n      {_origin(xyz, rpy)}\n      <geometry>{geometry}</geometry>\n    </collision>\n"
    return (
        '<?xml version="1.0"?>\n<robot name="object">\n'
        '  <material name="object"><color rgba="0.95 0.45 0.1 1"/></material>\n'
        f'  <link name="object">\n{body}  </link>\n</robot>\n'
    )


# -------------------------------------------------------------------------------------------------
# Merged bodies (fixed joints collapsed)


@dataclass(frozen=True)
class BodyPart:
    """One URDF link as a part of the rigid body that a simulator merging fixed joints makes of it.

    ``body``: the merged body (its moving link, or the root); ``parent``: the link this part hangs
    from by a fixed joint (None for the body's own link); ``mass`` (kg), ``com`` (3, m) and
    ``inertia`` (3, 3, kg*m^2, about ``com``) in the *body* frame; ``collisions``: the number of
    ``<collision>`` elements the link has in the URDF."""

    link: str
    body: str
    parent: Optional[str]
    mass: float
    com: np.ndarray
    inertia: np.ndarray
    collisions: int


def collapsed_bodies(side: str) -> Dict[str, List[BodyPart]]:
    """The rigid bodies of ``side``'s URDF with fixed joints merged: ``{body: parts}``, bodies in
    the URDF's order (``link_base``, ``link1`` ... ``link6``, then the fingers), each body's own link
    first and then its fixed descendants depth-first in URDF order (``link6``: ``link6``,
    ``base_link``, ``palm``, ``palm_center``)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    chain = CHAINS[side]
    shapes = link_collision_shapes(side)
    fixed_children: Dict[str, List[Link]] = {}
    for link in chain:
        if link.axis is None:
            fixed_children.setdefault(link.parent, []).append(link)
    bodies: Dict[str, List[BodyPart]] = {}

    def add(body: str, link: str, parent: Optional[str], rot: np.ndarray, pos: np.ndarray) -> None:
        link_shapes = shapes.get(link)
        mass, com, inertia = link_inertial(link, link_shapes)
        collisions = sum(len(_geometries(shape)) for shape in link_shapes or [])
        bodies[body].append(BodyPart(link, body, parent, mass, rot @ com + pos, rot @ inertia @ rot.T, collisions))
        for child in fixed_children.get(link, []):
            child_rot = rot @ rpy_matrix(child.rpy)
            add(body, child.child, link, child_rot, rot @ np.asarray(child.xyz, float) + pos)

    roots = ["link_base"] + [link.child for link in chain if link.axis is not None]
    for body in roots:
        bodies[body] = []
        add(body, body, None, np.eye(3), np.zeros(3))
    return bodies


def randomizable_links(side: str) -> Tuple[str, ...]:
    """The links of ``side`` that carry mass and move (every LINK_MASS link but the fixed
    ``link_base``), sorted: the keys of a per-link randomization; the MuJoCo twin's
    ``thrower_links``."""
    return tuple(sorted(name for name in LINK_MASS if name != "link_base"))


def merged_inertial(parts: Sequence[BodyPart], mass_scale: Sequence[float]) -> Tuple[float, np.ndarray, np.ndarray]:
    """Mass (kg), centre of mass (3,) and inertia about it (3, 3), in the body frame, of a merged body
    whose part ``i`` has its mass and inertia scaled by ``mass_scale[i]`` (parallel-axis theorem)."""
    scale = np.asarray(mass_scale, float)
    masses = np.array([p.mass for p in parts]) * scale
    total = float(masses.sum())
    com = sum(m * p.com for m, p in zip(masses, parts)) / total
    inertia = np.zeros((3, 3))
    for s, m, p in zip(scale, masses, parts):
        d = p.com - com
        inertia += s * p.inertia + m * (float(d @ d) * np.eye(3) - np.outer(d, d))
    return total, com, inertia


def write_urdfs(cfg: CellConfig, folder) -> Dict[str, Path]:
    """Write ``<folder>/<side>.urdf`` for both sides; returns ``{side: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for side in SIDES:
        path = folder / f"{side}.urdf"
        path.write_text(side_urdf(cfg, side))
        paths[side] = path
    return paths
