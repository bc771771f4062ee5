"""The scripted expert that throws and catches in the twin: the teacher of the reference policy.

It acts in the contract's action space (44 numbers in [-1, 1], thrower ++ catcher), so the contract
maps its actions to joint targets exactly as at deployment, and behaviour cloning can copy it 1:1.

The throw (thrower, contract indices 0..21): the fingers open flat, then arm joint3 (index 2) swings
towards its lower limit while joint2 (index 1) leans forward; after ``swing_steps`` control steps the
arm brakes (target set ``brake`` rad back from where joint3 is) and the object flies on towards the
goal. The catch (catcher, indices 22..43): from the first step the arm moves (at most 0.1 rad per step,
the contract's catcher gain) to the catch pose, whose palm is at the goal, and the fingers open; when the
tracked object comes within ``close_distance`` of the goal, the fingers close on it.

The goal (world, m) is the catcher's nominal catching point from the cell config; the catch pose is the
one whose palm centre sits there (see :func:`catch_pose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from handover.runtime.contract import ContractSpec, unscale
from handover.runtime.cell_config import CellConfig

# Contract indices (thrower 0..21, catcher 22..43).
THROWER_J2, THROWER_J3 = 1, 2
THROWER_HAND = slice(6, 22)
CATCHER_ARM = slice(22, 28)
CATCHER_HAND = slice(28, 44)
ROLL_JOINTS = ("joint_0.0", "joint_4.0", "joint_8.0")  # finger roll joints (URDF names; found by name)
THUMB_ROTATION = "joint_12.0"

CATCHER_VIEW_DELAY = 4  # steps: the newest object history entry in the catcher's observation is 4 steps old
THROWER_ARM_GAIN = 2.0  # rad per unit action per step (contract)
CATCHER_ARM_GAIN = 0.1  # rad per unit action per step (contract)


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
    """The expert's timing and poses. Steps are control steps (1/60 s); angles rad; distances m.

    The defaults come from a cross-entropy search in the twin (population 40, 10 generations, 12
    episodes per candidate over the corners of the training randomization) for the success rule of
    :mod:`handover.sim_twin.success`; with them the expert succeeds in 99 of 100 randomized episodes.
    The catch pose's palm centre is the cell config's goal (a test checks it).
    """

    open_step: int = 2  # thrower fingers go flat from this step
    swing_steps: int = 6  # steps of the swing before the brake
    swing_joint2: float = -0.068  # thrower joint2 target during the swing
    swing_joint3: float = -1.0  # thrower joint3 target during the swing (its lower limit)
    brake: float = 0.834  # at release, joint3's target is set this far back from its position
    # Catcher arm pose for the catch: joint2, joint3, joint5, joint6 (joint1 and joint4 are locked).
    catch_arm: tuple[float, float, float, float] = (0.965, -1.642, 1.998, -1.898)
    close_distance: float = 0.17  # close the fingers when the object (as the catcher sees it) is this near the goal
    close_fraction: float = 0.454  # closed finger flexion as a fraction of the way to the upper limit


class ExpertPolicy:
    """The scripted expert (see module docstring). Stateless apart from the episode's release point."""

    def __init__(self, cfg: CellConfig, expert: ExpertConfig = ExpertConfig()):
        self.cfg = cfg
        self.expert = expert
        self.spec = ContractSpec.from_config(cfg)
        lo, hi = self.spec.lower, self.spec.upper
        self.lo, self.hi = lo, hi
        # Hand postures (16 joints, Allegro order), same for both hands (the limits are the thrower's).
        hlo, hhi = lo[THROWER_HAND], hi[THROWER_HAND]
        slot = {n.split("/", 1)[1]: i for i, n in enumerate(cfg.thrower.hand.joints)}  # URDF name -> hand slot
        rolls = [slot[n] for n in ROLL_JOINTS]
        flat = hlo.copy()
        flat[rolls] = 0.0
        flat[slot[THUMB_ROTATION]] = hlo[slot[THUMB_ROTATION]]  # thumb rotation back
        closed = hlo + expert.close_fraction * (hhi - hlo)
        closed[rolls] = 0.0
        self.flat_hand = np.clip(flat, hlo, hhi)
        self.closed_hand = np.clip(closed, hlo, hhi)
        self.default_hand = np.clip(self.spec.default[THROWER_HAND], hlo, hhi)
        arm = self.spec.default[CATCHER_ARM].copy()
        arm[[1, 2, 4, 5]] = expert.catch_arm
        self.catch_arm = np.clip(arm, lo[CATCHER_ARM], hi[CATCHER_ARM])
        self.brake_target: Optional[float] = None
        self.closed = False
        self.seen: list[np.ndarray] = []

    def reset(self, params=None) -> None:
        self.brake_target = None
        self.closed = False
        self.seen = []

    def act(self, x: ActionInputs) -> np.ndarray:
        e, lo, hi = self.expert, self.lo, self.hi
        a = np.zeros(44)
        # -- thrower hand (absolute): default grip, then flat
        hand = self.flat_hand if x.step >= e.open_step else self.default_hand
        a[THROWER_HAND] = unscale(hand, lo[THROWER_HAND], hi[THROWER_HAND])
        # -- thrower arm joints 2 and 3 (relative, 2 rad per unit action)
        if x.step < e.swing_steps:
            want = np.array([e.swing_joint2, e.swing_joint3])
        else:
            if self.brake_target is None:
                self.brake_target = float(x.joint_positions[THROWER_J3]) + e.brake
            want = np.array([x.targets[THROWER_J2], self.brake_target])
        idx = [THROWER_J2, THROWER_J3]
        want = np.clip(want, lo[idx], hi[idx])
        a[idx] = (want - x.targets[idx]) / THROWER_ARM_GAIN
        # -- catcher arm (relative, 0.1 rad per unit action): towards the catch pose
        a[CATCHER_ARM] = (self.catch_arm - x.targets[CATCHER_ARM]) / CATCHER_ARM_GAIN
        # -- catcher hand (absolute): flat until the object is near the goal, then closed (latched).
        # The trigger uses the object position of CATCHER_VIEW_DELAY steps ago: the newest one the
        # catcher's own observation holds (contract: object history entries 12..15), so a learned
        # catcher can copy the decision from what it sees.
        self.seen.append(np.asarray(x.object_position, dtype=float))
        seen = self.seen[max(0, len(self.seen) - 1 - CATCHER_VIEW_DELAY)]
        if np.linalg.norm(seen - np.asarray(x.goal)) < e.close_distance:
            self.closed = True
        hand = self.closed_hand if self.closed else self.flat_hand
        a[CATCHER_HAND] = catcher_hand_actions(hand, lo[THROWER_HAND], hi[THROWER_HAND])
        return np.clip(a, -1.0, 1.0)


def catcher_hand_actions(hand: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 16 catcher-hand actions (contract indices 28..43) that command the hand slots 6..15 to
    ``hand[6:16]`` (rad) through the contract's catcher-hand quirk: slot ``j`` >= 6 takes the value
    scaled from action ``28 + j - 6`` (with the thrower's hand limits ``lo``/``hi``); slots 0..5 take
    the catcher arm's targets whatever the actions say, and actions 38..43 have no effect (0)."""
    a = np.zeros(16)
    a[:10] = unscale(hand[6:16], lo[6:16], hi[6:16])
    return a
