"""The contract's per-episode state in one object: object history, frame stack, action targets.

Used by the live policy step, the replay tool and evaluation, so the observation is built once,
the same way, everywhere. Networks are not part of it: the caller runs the goal estimator between
:meth:`push_object` and :meth:`inputs`, and the actors between :meth:`inputs` and :meth:`apply`.
"""

from __future__ import annotations

import numpy as np

from handover.runtime.action import ActionMapper
from handover.runtime.contract import ContractSpec
from handover.runtime.observation import FrameStack, ObjectHistory, agent_inputs, build_frame


class ContractState:
    def __init__(self, spec: ContractSpec):
        self.spec = spec
        self.history = ObjectHistory(spec.thrower_base)
        self.stack = FrameStack()
        self.mapper = ActionMapper(spec)

    def reset(self) -> np.ndarray:
        """Start an episode: history zeroed, targets to the default pose; the frame stack is kept
        (quirk of the original). Returns the 44 reset targets (rad)."""
        self.history.reset()
        return self.mapper.reset()

    def push_object(self, object_pos_world: np.ndarray) -> np.ndarray:
        """Append this step's object position (world, m); returns the 60-number history (relative)."""
        self.history.push(object_pos_world)
        return self.history.flat()

    def inputs(
        self,
        thrower_q: np.ndarray,
        catcher_q: np.ndarray,
        goal_world: np.ndarray,
        predicted_goal_rel: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Build this step's frame, push it on the stack, return the (thrower, catcher) 450-inputs."""
        frame = build_frame(self.spec, thrower_q, catcher_q, goal_world, self.history.entries, predicted_goal_rel)
        return agent_inputs(self.stack.push(frame))

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Map the 44 raw actions to the 44 new joint targets (rad)."""
        return self.mapper.apply(action)
