"""The policy as a controller: device readings in, joint targets out, once per control step.

Wraps :class:`~handover.runtime.policy_step.PolicyStep` for anything that reads devices (the twin's
episodes, evaluation, the ROS 2 policy node). The object position is the tracker's latest valid
observation; until the first one arrives, the configured start position (world, m) is used, and
after a dropout the last valid one is kept (never invented).
"""

from __future__ import annotations

import numpy as np

from handover.drivers.object_tracker import ObjectObservation
from handover.runtime.contract import ContractSpec
from handover.runtime.policy_networks import PolicyNetworks
from handover.runtime.policy_step import PolicyStep, StepResult


class PolicyController:
    def __init__(self, spec: ContractSpec, networks: PolicyNetworks, goal_world, object_start):
        self.step_fn = PolicyStep(spec, networks)
        self.goal = np.asarray(goal_world, dtype=np.float32)
        self.object_start = np.asarray(object_start, dtype=np.float32)
        self.last_object = self.object_start.copy()
        self.last_result: StepResult | None = None

    def reset(self) -> np.ndarray:
        self.last_object = self.object_start.copy()
        self.last_result = None
        return self.step_fn.reset()

    def targets(self, t: float, joint_positions: np.ndarray, obs: ObjectObservation) -> np.ndarray:
        if obs.valid:
            self.last_object = np.asarray(obs.position, dtype=np.float32)
        q = np.asarray(joint_positions, dtype=np.float32)
        self.last_result = self.step_fn.step(q[:22], q[22:], self.last_object, self.goal)
        return self.last_result.targets
