"""The policy as a controller: device readings in, joint targets out, once per control step.

Wraps :class:`~handover.runtime.policy_step.PolicyStep` for anything that reads devices (the twin's
episodes, evaluation, the ROS 2 policy node). The object position is the tracker's latest valid
observation; until the first one arrives, the configured start position (world, m) is used, and
after a dropout the last valid one is kept (never invented).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from handover.drivers.object_tracker import ObjectObservation
from handover.runtime.contract import ContractSpec
from handover.runtime.contract_state import ContractNoise
from handover.runtime.policy_networks import PolicyNetworks
from handover.runtime.policy_step import PolicyStep, StepResult


class PolicyController:
    def __init__(self, spec: ContractSpec, networks: PolicyNetworks, goal_world, object_start,
                 noise: ContractNoise = ContractNoise(), rng: Optional[np.random.Generator] = None):
        self.step_fn = PolicyStep(spec, networks, noise, rng)
        self.goal = np.asarray(goal_world, dtype=np.float32)
        self.object_start = np.asarray(object_start, dtype=np.float32)
        self.last_object = self.object_start.copy()
        self.last_result: StepResult | None = None

    def set_goal(self, goal_world) -> None:
        """The throw's goal for the next episodes (m, world)."""
        self.goal = np.asarray(goal_world, dtype=np.float32).reshape(3)

    def reset(self) -> np.ndarray:
        self.last_object = self.object_start.copy()
        self.last_result = None
        return self.step_fn.reset()

    @property
    def needs_efforts(self) -> bool:
        """True when :meth:`targets` must be given the 44 joint efforts (a property estimator takes them)."""
        return self.step_fn.needs_efforts

    def targets(self, t: float, joint_positions: np.ndarray, obs: ObjectObservation,
                efforts: Optional[np.ndarray] = None) -> np.ndarray:
        """44 joint targets (rad) from the 44 measured positions (rad), the latest object observation
        and, for a property estimator that takes them, the 44 measured efforts (N m); contract order."""
        if obs.valid:
            self.last_object = np.asarray(obs.position, dtype=np.float32)
        q = np.asarray(joint_positions, dtype=np.float32)
        e = None if efforts is None else np.asarray(efforts, dtype=np.float32)
        self.last_result = self.step_fn.step(q[:22], q[22:], self.last_object, self.goal, e)
        return self.last_result.targets
