"""The scripted expert that throws and catches in the twin: the teacher of the reference policy.

It acts in the contract's action space (44 numbers in [-1, 1], thrower ++ catcher), so the contract
maps its actions to joint targets exactly as at deployment (the catcher-hand quirk included), the
command gate limits each step's change to the joints' speed limits, and behaviour cloning can copy
it 1:1. Steps are control steps (50 ms at 20 Hz).

The throw (thrower, contract indices 0..21): the hand keeps its default grip while the catcher gets
ready; from ``swing_step`` arm joint2 (index 1) and joint3 (index 2) swing towards ``swing_joint2`` /
``swing_joint3`` (the gate and the twin cap them at 3.14 rad/s) and from ``open_step`` the fingers go
flat; when joint3 has swung past ``release_joint3`` (or after ``swing_steps`` steps) the arm brakes
(targets ``brake`` rad back from where joint3 is) and the object flies on.

The catch (catcher, indices 22..43): from the first step the arm moves (at most 0.1 rad per step,
the contract's catcher gain) to the catch pose whose palm centre is at the catch point, palm up,
solved by inverse kinematics in the twin's model (:class:`CatchPoseSolver`). Before the throw the
catch point is ``catch_point``; once the object flies, it is where the object will descend through
the height ``catch_point[2]`` on its ballistic path (privileged: the twin's true object state; the
learned catcher gets this from its goal estimator). The hand stays open; when the object is within
``close_distance`` of the catcher's palm centre (privileged too) the fingers close. The catcher's
hand slots 0..5 follow the arm's targets whatever it does (the contract's quirk): the expert
commands slots 6..15 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import mujoco
import numpy as np

from handover.runtime.cell_config import CellConfig
from handover.runtime.contract import CATCHER_ARM_GAIN, THROWER_ARM_GAIN, ContractSpec, unscale

# Contract indices (thrower 0..21, catcher 22..43).
THROWER_J2, THROWER_J3 = 1, 2
THROWER_HAND = slice(6, 22)
CATCHER_ARM = slice(22, 28)
CATCHER_HAND = slice(28, 44)
CATCHER_IK_JOINTS = (1, 2, 4, 5)  # catcher arm joints 2, 3, 5, 6 (arm-local indices); 1 and 4 are locked
ROLL_JOINTS = ("joint_0.0", "joint_4.0", "joint_8.0")  # finger roll joints (URDF names; found by name)
GRAVITY = 9.81  # m/s^2


@dataclass(frozen=True)
class ActionInputs:
    step: int  # control step index in the episode, 0..
    joint_positions: np.ndarray  # (44,) measured, rad, contract order
    object_position: np.ndarray  # (3,) latest valid tracked object position, world, m
    goal: np.ndarray  # (3,) throwing goal, world, m
    targets: np.ndarray  # (44,) the contract's current targets (``prev``), rad
    twin: object | None = None  # the Twin, for privileged information (None on hardware)


class ActionPolicy(Protocol):
    def reset(self, params) -> None:
        """Episode start; ``params`` are the episode's :class:`~handover.sim_twin.twin.EpisodeParams` (may be None)."""
        ...

    def act(self, inputs: ActionInputs) -> np.ndarray:
        """(44,) contract actions in [-1, 1]."""
        ...


@dataclass(frozen=True)
class ExpertConfig:
    """The expert's timing and poses. Steps are control steps (50 ms); angles rad; distances m."""

    swing_step: int = 10  # the arm starts its swing (the catcher is in place by then)
    open_step: int = 11  # the thrower's fingers go flat from this step
    swing_steps: int = 5  # the longest swing (steps) before the brake
    # The brake comes as soon as the measured joint3 has swung below this (rad): swinging into the
    # joints' speed limit and releasing at a position makes the throw the same whatever the arm's gains.
    release_joint3: float = -1.0
    swing_joint2: float = 0.2  # thrower joint2 target during the swing
    swing_joint3: float = -1.0  # thrower joint3 target during the swing (its lower limit)
    brake: float = 0.3  # at the brake, joint3's target is set this far back from its position
    catch_point: tuple[float, float, float] = (0.02, -0.80, 0.43)  # palm centre before the throw, world
    # The catch points the catcher goes to are clamped to this box (world, m): its arm's comfortable reach.
    catch_lower: tuple[float, float, float] = (-0.1, -0.95, 0.3)
    catch_upper: tuple[float, float, float] = (0.1, -0.65, 0.6)
    close_distance: float = 0.15  # close the fingers when the object is this near the catcher's palm centre
    close_fraction: float = 0.9  # closed finger flexion as a fraction of the way to the upper limit
    open_fraction: float = 0.3  # the catcher's open (cupped) finger flexion, the same way
    # How far each of the thrower's fingers goes from the grip towards flat at ``open_step`` (0: keeps
    # the grip, 1: flat); the thumb's rotation (joint_12.0) keeps the grip. The middle and ring fingers
    # and the thumb open; the index finger keeps guiding the object: opening it too pushed the object
    # 0.1-0.2 m sideways at the catcher under the training randomization.
    open_index: float = 0.0
    open_middle: float = 1.0
    open_ring: float = 1.0
    open_thumb: float = 1.0
    catch_wrist: float = -1.57  # catcher joint6 (wrist roll) the catch pose starts from, rad


class CatchPoseSolver:
    """Inverse kinematics of the catcher's palm centre in the twin's model: catcher arm joints 2, 3,
    5, 6 (rad) that put the site ``catcher/palm_center`` at a point (m, world) with the palm's
    normal (the site's x axis) up; damped least squares from a start pose, within the joint limits."""

    def __init__(self, twin, cfg: CellConfig):
        self.model = twin.model
        self.data = mujoco.MjData(twin.model)
        self.site = twin.model.site("catcher/palm_center").id
        arm = [cfg.joint_names.index(n) for n in cfg.catcher.arm.joints]
        self.qadr = twin.qpos_adr[arm]
        self.dofs = twin.dof_adr[arm][list(CATCHER_IK_JOINTS)]
        self.lo = np.asarray(cfg.catcher.arm.lower, float)
        self.hi = np.asarray(cfg.catcher.arm.upper, float)
        self.data.qpos[:] = twin.data.qpos

    def solve(self, point: np.ndarray, start: np.ndarray, iterations: int = 12) -> np.ndarray:
        """The 6 catcher arm joint positions (rad) for ``point``; joints 1 and 4 stay at ``start``'s."""
        m, d = self.model, self.data
        q = np.clip(np.asarray(start, float).copy(), self.lo, self.hi)
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        idx = list(CATCHER_IK_JOINTS)
        for _ in range(iterations):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            pos = d.site_xpos[self.site]
            normal = d.site_xmat[self.site].reshape(3, 3)[:, 0]
            mujoco.mj_jacSite(m, d, jacp, jacr, self.site)
            e_pos = np.asarray(point) - pos
            e_rot = np.cross(normal, [0.0, 0.0, 1.0])  # rotate the palm normal towards up
            J = np.vstack([jacp[:, self.dofs], 0.2 * jacr[:, self.dofs]])
            e = np.concatenate([e_pos, 0.2 * e_rot])
            dq = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), e)
            q[idx] = np.clip(q[idx] + dq, self.lo[idx], self.hi[idx])
        return q


def landing_point(position: np.ndarray, velocity: np.ndarray, height: float) -> Optional[np.ndarray]:
    """Where a ballistic object at ``position`` (m) with ``velocity`` (m/s) descends through z =
    ``height``, or None if it never does (world frame, gravity along -z)."""
    p, v = np.asarray(position, float), np.asarray(velocity, float)
    # p_z + v_z t - g t^2 / 2 = height, the later root
    a, b, c = -0.5 * GRAVITY, v[2], p[2] - height
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    t = (-b - np.sqrt(disc)) / (2 * a)
    if t < 0:
        return None
    return np.array([p[0] + v[0] * t, p[1] + v[1] * t, height])


class ExpertPolicy:
    """The scripted expert (see the module docstring)."""

    def __init__(self, cfg: CellConfig, expert: ExpertConfig = ExpertConfig(), twin=None):
        self.cfg = cfg
        self.expert = expert
        self.spec = ContractSpec.from_config(cfg)
        lo, hi = self.spec.lower, self.spec.upper
        self.lo, self.hi = lo, hi
        # Hand postures (16 slots), same for both hands (the limits are the thrower's).
        hlo, hhi = lo[THROWER_HAND], hi[THROWER_HAND]
        slot = {n.split("/", 1)[1]: i for i, n in enumerate(cfg.thrower.hand.joints)}  # URDF name -> hand slot
        rolls = [slot[n] for n in ROLL_JOINTS]
        flat = hlo.copy()
        flat[rolls] = 0.0
        closed = hlo + expert.close_fraction * (hhi - hlo)
        closed[rolls] = 0.0
        cupped = hlo + expert.open_fraction * (hhi - hlo)
        cupped[rolls] = 0.0
        self.open_hand = np.clip(cupped, hlo, hhi)  # the catcher's open hand (before it closes)
        default = self.spec.default[THROWER_HAND]
        amount = {0: expert.open_index, 4: expert.open_middle, 8: expert.open_ring, 12: expert.open_thumb}
        for j in range(16):  # URDF joint j belongs to the finger whose first joint is 4 * (j // 4)
            k = slot[f"joint_{j}.0"]
            a = 0.0 if j == 12 else amount[4 * (j // 4)]
            flat[k] = default[k] + a * (flat[k] - default[k])
        self.flat_hand = np.clip(flat, hlo, hhi)  # the thrower's hand after the release
        self.closed_hand = np.clip(closed, hlo, hhi)
        self.default_hand = np.clip(self.spec.default[THROWER_HAND], hlo, hhi)
        self._solver: Optional[CatchPoseSolver] = None
        self._solver_twin = None
        self.catch_arm: Optional[np.ndarray] = None
        self.nominal_arm: Optional[np.ndarray] = None  # the catch pose at ``catch_point`` (solved once)
        self.brake_target: Optional[float] = None
        self.closed = False
        self.flying = False
        self.catch_point = np.asarray(expert.catch_point, float)

    def solver(self, twin) -> CatchPoseSolver:
        if self._solver is None or self._solver_twin is not twin:
            self._solver, self._solver_twin = CatchPoseSolver(twin, self.cfg), twin
        return self._solver

    def reset(self, params=None) -> None:
        self.brake_target = None
        self.closed = False
        self.flying = False
        self.catch_point = np.asarray(self.expert.catch_point, float)
        self.catch_arm = None

    def act(self, x: ActionInputs) -> np.ndarray:
        if x.twin is None:
            raise ValueError("ExpertPolicy needs the twin (privileged object state and the model for its catch pose)")
        e, lo, hi, twin = self.expert, self.lo, self.hi, x.twin
        a = np.zeros(44)
        # -- thrower hand (absolute): default grip, then flat
        hand = self.flat_hand if x.step >= e.open_step else self.default_hand
        a[THROWER_HAND] = unscale(hand, lo[THROWER_HAND], hi[THROWER_HAND])
        # -- thrower arm joints 2 and 3 (relative, 2 rad per unit action)
        idx = [THROWER_J2, THROWER_J3]
        swinging = e.swing_step <= x.step < e.swing_step + e.swing_steps
        if x.step < e.swing_step:
            want = np.asarray(self.spec.default[idx], float)
        elif swinging and self.brake_target is None and x.joint_positions[THROWER_J3] > e.release_joint3:
            want = np.array([e.swing_joint2, e.swing_joint3])
        else:
            if self.brake_target is None:
                self.brake_target = float(x.joint_positions[THROWER_J3]) + e.brake
            want = np.array([float(x.joint_positions[THROWER_J2]), self.brake_target])
        want = np.clip(want, lo[idx], hi[idx])
        a[idx] = (want - x.targets[idx]) / THROWER_ARM_GAIN
        # -- catcher arm (relative, 0.1 rad per unit action): towards the catch pose
        obj_p, obj_v = twin.object_position(), twin.object_velocity()
        if not self.flying and x.step >= e.swing_step and obj_v[1] < -0.5:
            self.flying = True
        if self.flying and not self.closed:
            land = landing_point(obj_p, obj_v, e.catch_point[2])
            if land is not None:
                self.catch_point = np.clip(land, e.catch_lower, e.catch_upper)
        solver = self.solver(twin)
        if self.nominal_arm is None:
            start = self.spec.default[CATCHER_ARM].astype(float)
            start[5] = e.catch_wrist
            self.nominal_arm = solver.solve(np.asarray(e.catch_point), start, iterations=50)
        self.catch_arm = solver.solve(self.catch_point, self.nominal_arm, iterations=15)
        a[CATCHER_ARM] = (self.catch_arm - x.targets[CATCHER_ARM]) / CATCHER_ARM_GAIN
        # -- catcher hand (absolute, through the quirk): open, closed once the object is near (latched)
        palm = twin.data.site_xpos[twin.model.site("catcher/palm_center").id]
        if np.linalg.norm(obj_p - palm) < e.close_distance:
            self.closed = True
        hand = self.closed_hand if self.closed else self.open_hand
        a[CATCHER_HAND] = catcher_hand_actions(hand, lo[THROWER_HAND], hi[THROWER_HAND])
        return np.clip(a, -1.0, 1.0)


def catcher_hand_actions(hand: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 16 catcher-hand actions (contract indices 28..43) that command the hand slots 6..15 as near
    to ``hand[6:16]`` (rad) as the contract's catcher-hand quirk allows: slot ``j`` >= 6 takes
    ``scale(a[28 + j - 6], lo[j - 6], hi[j - 6])``, i.e. a value in slot ``j - 6``'s range (``lo``/``hi``:
    the thrower's hand limits per slot), then clamped to slot ``j``'s limits. Slots 0..5 take the
    catcher arm's targets whatever the actions say, and actions 38..43 have no effect (0)."""
    a = np.zeros(16)
    a[:10] = np.clip(unscale(hand[6:16], lo[0:10], hi[0:10]), -1.0, 1.0)
    return a
