"""The MuJoCo model of the cell, built in code with ``mujoco.MjSpec`` from the facts.

- Both xArm6 arms with Allegro hands, bases and yaws from the cell config, joint origins and axes
  from :mod:`handover.sim_twin.kinematics`, the training joint limits from the cell config, link
  masses from robot-cell.md; simple collision shapes (capsules, boxes, spheres) for links, palms
  and fingertips; a floor and a pedestal under each arm base.
- Joints are named ``thrower/<urdf joint>`` / ``catcher/<urdf joint>`` (the cell config's names);
  bodies ``<side>/<urdf link>``; sites ``<side>/palm``, ``<side>/palm_center`` and
  ``<side>/link_N.0_tip`` stand for the URDF's fixed frames.
- One PD position actuator per joint (named like the joint): stiffness, damping and effort limits
  from the cell config's ``twin`` section (the contract's gains).
- The object: a free body ``object`` (sphere, cube or cylinder; nominal size, mass and friction
  from the config, changed per episode by the twin).
- Cameras ``d435`` and ``overview``.

Contacts: robot geoms touch the object only; the object also touches the floor. The object's geom
has contact priority, so its friction (the config's, times the episode's factor) is the friction of
every contact it makes. (PhysX averages the two surfaces' frictions; MuJoCo takes the larger one
unless a geom has priority, which left a friction factor below 1 without effect against the robots'
friction of 1.0. With the nominal frictions of 1.0 both give the same number; the thrower's per-link
friction factors of the training randomization have no effect in the MuJoCo twin.)
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from handover.runtime.cell_config import CameraConfig, CellConfig, SideConfig
from handover.runtime.files import write_text
from handover.sim_twin.kinematics import CHAINS, LINK_MASS, Link

SIDES = ("thrower", "catcher")

# contype/conaffinity bits: robot, object, environment.
_ROBOT, _OBJECT, _ENV = 1, 2, 4

# Joint limits are soft constraints in MuJoCo; their time constant, in physics steps, is the
# stiffest that stays stable (MuJoCo needs at least 2); the default 0.02 s let arm joints pass
# their limits by 0.06 rad under full effort.
LIMIT_TIMECONST_STEPS = 2.0
FINGER_RADIUS = 0.0098  # m, Allegro finger half-width
TIP_RADIUS = 0.012  # m

# Collision shapes per URDF link, in the link frame: (kind, params). Capsules are "from -> to".
_ARM_SHAPES = {
    "link_base": [("cylinder", (0, 0, 0.0), (0, 0, 0.2), 0.06)],
    "link1": [("capsule", (0, 0, -0.07), (0, 0, 0.03), 0.055)],
    "link2": [("capsule", (0, 0, 0), (0.0535, -0.2845, 0), 0.05)],
    "link3": [("capsule", (0, 0, 0), (0.0775, 0.3425, 0), 0.045)],
    "link4": [("sphere", (0, 0, 0), None, 0.045)],
    "link5": [("capsule", (0, 0, 0), (0.076, 0.097, 0), 0.04)],
    "link6": [("cylinder", (0, 0, 0), (0, 0, 0.02), 0.04)],
}
_PALM_BOX = ((-0.0093, 0.0, -0.0475), (0.0204, 0.0565, 0.0475))  # centre, half sizes (Allegro palm)


def rpy_to_quat(rpy) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes X, Y, Z: R = Rz Ry Rx) as a MuJoCo quaternion (w, x, y, z)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r / 2), np.sin(r / 2), np.cos(p / 2), np.sin(p / 2), np.cos(y / 2), np.sin(y / 2)
    return np.array([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def look_at_quat(cam: CameraConfig) -> np.ndarray:
    """Orientation (w, x, y, z) of a MuJoCo camera at ``position`` looking at ``target``, world z up.
    A MuJoCo camera looks along its -z axis with +y up in the image."""
    pos, target = np.asarray(cam.position, float), np.asarray(cam.target, float)
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # looking straight down or up
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([right, up, -forward]).reshape(-1))
    return quat


def _add_shape(body, shape, mass: float, rgba, name: str = "") -> None:
    kind, a, b, size = shape
    common = dict(mass=mass, rgba=rgba, contype=_ROBOT, conaffinity=_OBJECT)
    if kind == "box":
        body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, pos=a, size=list(b), **common)
    elif kind == "sphere":
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, pos=a, size=[size, 0, 0], **common)
    elif kind == "capsule":
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[*a, *b], size=[size, 0, 0], **common)
    elif kind == "cylinder":
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, fromto=[*a, *b], size=[size, 0, 0], **common)


def link_collision_shapes(side: str) -> dict[str, list[tuple]]:
    """Collision shapes of every moving link of one side, in the link's frame:
    ``{urdf link: [(kind, a, b, size), ...]}`` with kind ``capsule``/``cylinder`` (from ``a`` to
    ``b``, radius ``size``), ``sphere`` (centre ``a``, radius ``size``) or ``box`` (centre ``a``,
    half sizes ``b``). The first shape carries the link's mass. Hand links are capsules from the
    link origin to the next joint, distal links end in a fingertip sphere."""
    chain = CHAINS[side]
    by_parent: dict[str, list[Link]] = {}
    for link in chain:
        by_parent.setdefault(link.parent, []).append(link)
    shapes = {name: list(s) for name, s in _ARM_SHAPES.items()}
    shapes["base_link"] = [("box", _PALM_BOX[0], _PALM_BOX[1], None)]
    for link in chain:
        if link.axis is None or link.child in shapes:
            continue
        children = by_parent.get(link.child, [])
        end = np.asarray(children[0].xyz if children else (0, 0, 0.02), float)
        if children and children[0].child.endswith("_tip"):  # distal link: capsule up to the tip sphere
            end = tuple(end * (1 - TIP_RADIUS / np.linalg.norm(end)))
            shapes[link.child] = [("capsule", (0, 0, 0), end, FINGER_RADIUS), ("sphere", end, None, TIP_RADIUS)]
        else:
            shapes[link.child] = [("capsule", (0, 0, 0), tuple(end), FINGER_RADIUS)]
    return shapes


def _build_side(spec: mujoco.MjSpec, cfg: CellConfig, side: str, side_cfg: SideConfig) -> None:
    tw = cfg.twin
    chain = CHAINS[side]
    shapes_of = link_collision_shapes(side)
    limits = dict(zip(side_cfg.joint_names, zip(side_cfg.lower, side_cfg.upper)))
    arm_rgba, hand_rgba = ([0.85, 0.85, 0.88, 1], [0.15, 0.15, 0.17, 1]) if side == "thrower" else ([0.80, 0.86, 0.95, 1], [0.12, 0.16, 0.25, 1])

    x, y, z = side_cfg.base_position
    spec.worldbody.add_geom(
        name=f"{side}/pedestal", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[x, y, z / 2], size=[0.12, 0.12, z / 2],
        rgba=[0.35, 0.35, 0.38, 1], contype=_ENV, conaffinity=_OBJECT,
    )
    bodies = {"link_base": spec.worldbody.add_body(
        name=f"{side}/link_base", pos=list(side_cfg.base_position), quat=rpy_to_quat((0, 0, side_cfg.base_yaw)))}
    for shape in shapes_of["link_base"]:
        _add_shape(bodies["link_base"], shape, LINK_MASS["link_base"], arm_rgba)

    arm_index = {f"joint{i + 1}": i for i in range(6)}
    for link in chain:
        parent = bodies[link.parent]
        if link.axis is None and link.child != "base_link":  # fixed frames: sites on the parent
            parent.add_site(name=f"{side}/{link.child}", pos=list(link.xyz), quat=rpy_to_quat(link.rpy), size=[0.005, 0, 0])
            continue
        # gravcomp: the xArm's controller and the Allegro driver compensate gravity; PD holds the rest.
        body = parent.add_body(name=f"{side}/{link.child}", pos=list(link.xyz), quat=rpy_to_quat(link.rpy), gravcomp=1.0)
        bodies[link.child] = body
        shapes = shapes_of[link.child]
        rgba = arm_rgba if link.joint in arm_index else hand_rgba
        _add_shape(body, shapes[0], LINK_MASS[link.child], rgba, name=f"{side}/palm_box" if link.child == "base_link" else "")
        for shape in shapes[1:]:
            _add_shape(body, shape, 0.0, hand_rgba)
        if link.child == "base_link":
            continue
        name = f"{side}/{link.joint}"
        lo, hi = limits[name]
        is_arm = link.joint in arm_index
        friction = tw.arm_friction[arm_index[link.joint]] if is_arm else 0.0
        body.add_joint(name=name, type=mujoco.mjtJoint.mjJNT_HINGE, axis=list(link.axis), range=[lo, hi],
                       limited=mujoco.mjtLimited.mjLIMITED_TRUE, armature=0.0 if is_arm else tw.hand_armature,
                       frictionloss=friction, solref_limit=[LIMIT_TIMECONST_STEPS * tw.timestep_s, 1.0])
        if is_arm:
            i = arm_index[link.joint]
            kp, kv, effort = tw.arm_stiffness[i], tw.arm_damping[i], tw.arm_effort_limit[i]
        else:
            kp, kv, effort = tw.hand_stiffness, tw.hand_damping, tw.hand_effort_limit
        act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, kv=kv)
        act.forcerange = [-effort, effort]
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.ctrlrange = [lo, hi]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE


def _add_object(spec: mujoco.MjSpec, cfg: CellConfig) -> None:
    obj = cfg.twin.object
    body = spec.worldbody.add_body(name="object", pos=list(cfg.object.start_position))
    body.add_freejoint(name="object")
    size = obj.size
    kinds = {
        "sphere": (mujoco.mjtGeom.mjGEOM_SPHERE, [size, 0, 0]),
        "cube": (mujoco.mjtGeom.mjGEOM_BOX, [size, size, size]),
        "cylinder": (mujoco.mjtGeom.mjGEOM_CYLINDER, [size, size, 0]),
    }
    kind, sizes = kinds[obj.shape]
    body.add_geom(name="object", type=kind, size=sizes, mass=obj.mass, friction=[obj.friction, 0.005, 0.0001], priority=1,
                  condim=4, rgba=[0.95, 0.45, 0.1, 1], contype=_OBJECT, conaffinity=_ROBOT | _OBJECT | _ENV)


def build_spec(cfg: CellConfig) -> mujoco.MjSpec:
    """The whole cell as an ``MjSpec`` (compile it with ``spec.compile()``)."""
    spec = mujoco.MjSpec()
    spec.modelname = "handover_cell"
    spec.compiler.degree = False
    spec.option.timestep = cfg.twin.timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.visual.global_.offwidth = 1280
    spec.visual.global_.offheight = 960
    tex = spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                           rgb1=[0.22, 0.24, 0.27], rgb2=[0.30, 0.32, 0.36], width=512, height=512)
    mat = spec.add_material(name="grid", texrepeat=[8, 8])
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex.name
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.05], material="grid",
                            contype=_ENV, conaffinity=_OBJECT)
    spec.worldbody.add_light(name="key", pos=[0.5, -0.7, 2.5], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
    spec.worldbody.add_light(name="fill", pos=[-1.5, 1.0, 2.0], dir=[0.5, -0.5, -0.7], diffuse=[0.3, 0.3, 0.3])
    for side in SIDES:
        _build_side(spec, cfg, side, getattr(cfg, side))
    _add_object(spec, cfg)
    for name, cam in cfg.twin.cameras.items():
        spec.worldbody.add_camera(name=name, pos=list(cam.position), fovy=cam.fovy_deg, quat=look_at_quat(cam))
    return spec


def home_joints(cfg: CellConfig) -> np.ndarray:
    """The 44 joint positions of the reset pose (rad, contract order): the default clamped to the limits."""
    return np.clip(np.asarray(cfg.thrower.default + cfg.catcher.default),
                   np.asarray(cfg.thrower.lower + cfg.catcher.lower), np.asarray(cfg.thrower.upper + cfg.catcher.upper))


def build_model(cfg: CellConfig) -> mujoco.MjModel:
    """Compile the cell. Checks that the model's hinge joints are exactly the config's joints (the
    model orders them by its kinematic tree; everything maps them by name)."""
    model = build_spec(cfg).compile()
    names = [model.joint(i).name for i in range(model.njnt) if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    if sorted(names) != sorted(cfg.joint_names):
        raise AssertionError(f"model joints {sorted(names)} differ from the config's {sorted(cfg.joint_names)}")
    return model


def export_mjcf(cfg: CellConfig, path: str | Path) -> Path:
    """Write the compiled model as MJCF that ``mujoco.MjModel.from_xml_path`` loads."""
    spec = build_spec(cfg)
    spec.compile()
    return write_text(path, spec.to_xml())
