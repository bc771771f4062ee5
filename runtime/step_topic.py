"""``/handover/policy/step``: what one policy step saw and did, as a standard ``sensor_msgs/JointState``.

So that a recorded run can be replayed exactly (:mod:`handover.sim_twin.replay_bag`, closed loop), the
policy node publishes one message per EPISODE tick (a policy step) with everything the step was given
and everything it returned. Standard type, self-describing: each value is named in ``name`` and its
value is in ``position`` (same index); ``velocity`` and ``effort`` are empty.

- ``header.stamp``: the tick's deadline (node clock, the stamp of the tick's commands);
  ``header.frame_id``: the episode's token (as the commands carry it);
- ``step``: the policy step index (0..episode_steps-1);
- ``in/<joint>`` (44, contract order, rad): the measured positions the step used;
- ``in/effort/<joint>`` (44, N*m): the measured efforts, only when the bundle's property estimator
  takes them;
- ``in/object/x|y|z`` (m, world): the object observation the step was given (NaN when not found);
- ``in/object/valid``: 1.0 when found, 0.0 when not (the controller then keeps its last valid one);
- ``in/goal/x|y|z`` (m, world): the episode's goal (drawn per episode, see ``goal:`` in the config);
- ``out/<joint>`` (44, rad): the targets the step returned (as published on the joint commands);
- ``out/predicted_goal/x|y|z`` (m, world): the predicted goal (as on ``/handover/policy/predicted_goal``).

This module imports no ROS package at import time (the message is built lazily).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

POLICY_STEP_TOPIC = "/handover/policy/step"
_XYZ = ("x", "y", "z")


def step_names(joint_names: Sequence[str], efforts: bool = False) -> list[str]:
    """The ``name`` list of a step message for the 44 ``joint_names`` (contract order). Built once
    per joint list (the policy node's control loop asks for it every step)."""
    return list(_step_names(tuple(joint_names), bool(efforts)))


@functools.lru_cache(maxsize=8)
def _step_names(joint_names: tuple, efforts: bool) -> tuple:
    names = ["step"] + [f"in/{j}" for j in joint_names]
    if efforts:
        names += [f"in/effort/{j}" for j in joint_names]
    names += [f"in/object/{a}" for a in _XYZ] + ["in/object/valid"] + [f"in/goal/{a}" for a in _XYZ]
    names += [f"out/{j}" for j in joint_names] + [f"out/predicted_goal/{a}" for a in _XYZ]
    return tuple(names)


@dataclass
class PolicyStepRecord:
    """One policy step. Arrays in contract order; positions rad, efforts N*m, points m (world)."""

    stamp: float  # s, node clock: the tick's deadline
    token: str  # the episode's token
    step: int
    q: np.ndarray  # (44,)
    obj: np.ndarray  # (3,), NaN when not found
    obj_valid: bool
    goal: np.ndarray  # (3,)
    targets: np.ndarray  # (44,)
    predicted_goal: np.ndarray  # (3,)
    efforts: Optional[np.ndarray] = None  # (44,) or None

    def values(self) -> list[float]:
        v = [float(self.step), *self.q]
        if self.efforts is not None:
            v += list(self.efforts)
        v += [*self.obj, 1.0 if self.obj_valid else 0.0, *self.goal, *self.targets, *self.predicted_goal]
        return [float(x) for x in v]


def step_msg(joint_names: Sequence[str], rec: PolicyStepRecord):
    """The ``sensor_msgs/JointState`` of one policy step (what the policy node publishes)."""
    from handover.runtime.ros_interface import joint_state_msg

    return joint_state_msg(step_names(joint_names, rec.efforts is not None), rec.stamp, rec.values(),
                           frame_id=rec.token)


def parse_step(names: Sequence[str], values: Sequence[float], stamp: float, token: str,
               joint_names: Sequence[str], where: str = POLICY_STEP_TOPIC) -> PolicyStepRecord:
    """A :class:`PolicyStepRecord` from a step message's ``name`` and ``position``; ``ValueError``
    naming ``where`` and the missing names if it does not fit ``joint_names``."""
    index = {n: i for i, n in enumerate(names)}
    if len(values) != len(names):
        raise ValueError(f"{where}: {len(names)} names but {len(values)} values")
    efforts = f"in/effort/{joint_names[0]}" in index
    missing = [n for n in step_names(joint_names, efforts) if n not in index]
    if missing:
        raise ValueError(f"{where}: not a policy step of this cell: {len(missing)} names missing (first {missing[0]!r})")
    v = np.asarray(values, dtype=float)

    def get(prefix: str, keys) -> np.ndarray:
        return np.array([v[index[f"{prefix}{k}"]] for k in keys], dtype=float)

    return PolicyStepRecord(
        stamp=float(stamp), token=token, step=int(v[index["step"]]), q=get("in/", joint_names),
        obj=get("in/object/", _XYZ), obj_valid=bool(v[index["in/object/valid"]] > 0.5), goal=get("in/goal/", _XYZ),
        targets=get("out/", joint_names), predicted_goal=get("out/predicted_goal/", _XYZ),
        efforts=get("in/effort/", joint_names) if efforts else None)
