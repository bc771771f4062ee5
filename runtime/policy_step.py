"""The policy step: latest joint states, object position and goal in; 44 joint targets out.

Order per control step (the training environment's): push the object position into the history,
run the goal estimator on the history, build frame/stack/per-agent inputs, run both actors, map
the 44 actions to targets; the property estimator (if the bundle has one) runs on the last 20
steps of (object position relative to the thrower base, 44 joint positions[, 44 joint efforts]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from handover.runtime.contract import DOFS, PROPERTY_HISTORY_LEN, PROPERTY_STEP_SIZE, ContractSpec
from handover.runtime.contract_state import ContractNoise, ContractState
from handover.runtime.errors import InputError
from handover.runtime.policy_networks import PolicyNetworks


@dataclass(frozen=True)
class StepResult:
    targets: np.ndarray  # (44,) joint position targets, rad, contract order
    predicted_goal_world: np.ndarray  # (3,) goal-estimator output, world frame, m
    properties: Optional[np.ndarray]  # (P,) property estimate (e.g. mass factor) or None
    action: np.ndarray  # (44,) raw actor outputs (before clipping)
    thrower_input: np.ndarray  # (450,)
    catcher_input: np.ndarray  # (450,)


class PropertyWindow:
    """FIFO of the last k steps of ``[object_rel (3), q (44)(, effort (44))]``, oldest first; zeroed at reset."""

    def __init__(self, step_size: int, k: int = PROPERTY_HISTORY_LEN):
        self.buffer = np.zeros((k, step_size), dtype=np.float32)

    def reset(self) -> None:
        self.buffer[:] = 0.0

    def push(self, row: np.ndarray) -> np.ndarray:
        self.buffer[:-1] = self.buffer[1:]
        self.buffer[-1] = row
        return self.buffer.reshape(-1)


class PolicyStep:
    """One object per running policy. Call :meth:`reset` at each episode start, then :meth:`step`
    once per control period."""

    def __init__(self, spec: ContractSpec, networks: PolicyNetworks, noise: ContractNoise = ContractNoise(),
                 rng: Optional[np.random.Generator] = None):
        self.spec = spec
        self.networks = networks
        self.state = ContractState(spec, noise, rng)
        self.window: Optional[PropertyWindow] = None
        self._with_efforts = False
        size = networks.actors.property_input_size
        if size is not None:
            with_positions, with_efforts = (PROPERTY_HISTORY_LEN * n for n in (PROPERTY_STEP_SIZE, PROPERTY_STEP_SIZE + DOFS))
            if size not in (with_positions, with_efforts):
                raise InputError(f"property_estimator: input size {size} is neither {with_positions} nor {with_efforts}")
            self._with_efforts = size == with_efforts
            self.window = PropertyWindow(size // PROPERTY_HISTORY_LEN)
        self.reset()

    @property
    def needs_efforts(self) -> bool:
        """True when the bundle's property estimator takes the 44 joint efforts."""
        return self._with_efforts

    def reset(self) -> np.ndarray:
        """Episode start: contract state, recurrent states and the property window cleared.
        Returns the 44 reset targets (rad)."""
        self.networks.reset()
        if self.window is not None:
            self.window.reset()
        return self.state.reset()

    def step(
        self,
        thrower_q: np.ndarray,
        catcher_q: np.ndarray,
        object_pos_world: np.ndarray,
        goal_world: np.ndarray,
        efforts: Optional[np.ndarray] = None,
    ) -> StepResult:
        """Run one control step.

        Args:
            thrower_q, catcher_q: 22 measured joint positions each (rad), contract order.
            object_pos_world: tracked object position (m, world).
            goal_world: throwing goal (m, world).
            efforts: 44 joint efforts (N*m), needed only by a property estimator trained with them.
        """
        nets = self.networks
        history = self.state.push_object(object_pos_world)
        pred_rel = np.asarray(nets.goal_estimator.run(history), dtype=np.float32).reshape(3)
        t_in, c_in = self.state.inputs(thrower_q, catcher_q, goal_world, pred_rel)
        window = None
        if self.window is not None:
            row = [self.state.history.entries[-1], thrower_q, catcher_q]
            if self._with_efforts:
                if efforts is None:
                    raise InputError("property_estimator needs joint efforts (44), none were given")
                row.append(efforts)
            window = self.window.push(np.concatenate(row))
        action, props = nets.actors.run(t_in, c_in, window)
        targets = self.state.apply(action)
        return StepResult(
            targets=targets,
            predicted_goal_world=pred_rel + self.spec.thrower_base,
            properties=props,
            action=action,
            thrower_input=t_in,
            catcher_input=c_in,
        )
