"""The contract's per-episode state in one object: object history, frame stack, action targets,
and the noise the original adds.

Used by the live policy step, the replay tool, evaluation and the demonstrations, so the
observation is built once, the same way, everywhere. Networks are not part of it: the caller runs
the goal estimator between :meth:`push_object` and :meth:`inputs`, and the actors between
:meth:`inputs` and :meth:`apply`.

Noise (:class:`ContractNoise`, all off by default; a ``numpy.random.Generator`` draws it):

- ``history``: the original adds ``U(-1, 1) * 0.05`` per element per step to the 12 object-history
  numbers of the catcher's part of each frame, always, in evaluation too (not to the goal
  estimator's input). It is part of what a policy trained there saw: the twin's evaluation,
  demonstrations and the live policy use the cell config's ``history_noise`` (0.05).
- ``obs_gaussian``/``obs_correlated``: the training randomization's observation noise: a fresh
  ``N(0, obs_gaussian)`` per element per step plus a correlated ``N(0, obs_correlated)`` drawn once
  per :class:`ContractState`, added to the 900-number observation before it is clipped and split
  (the frames kept on the stack stay clean).
- ``action_gaussian``/``action_correlated``: the same for the 44 raw actions, before clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from handover.runtime.action import ActionMapper
from handover.runtime.contract import CATCHER_HISTORY, DOFS, FRAME_SIZE, STACK_FRAMES, ContractSpec
from handover.runtime.observation import FrameStack, ObjectHistory, agent_inputs, build_frame


@dataclass(frozen=True)
class ContractNoise:
    """Noise amplitudes (see the module docstring); positions in m, joint inputs normalized, actions in [-1, 1]."""

    history: float = 0.0  # U(-1, 1) * history on the catcher's 12 history numbers per step
    obs_gaussian: float = 0.0
    obs_correlated: float = 0.0
    action_gaussian: float = 0.0
    action_correlated: float = 0.0

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"ContractNoise.{name} must be a number >= 0, got {value!r}")

    @staticmethod
    def training(history: float) -> "ContractNoise":
        """The original's training randomization (contract document): observations N(0, 0.002) plus
        correlated N(0, 0.001), actions N(0, 0.05) plus correlated N(0, 0.015); ``history`` as configured."""
        return ContractNoise(history=history, obs_gaussian=0.002, obs_correlated=0.001,
                             action_gaussian=0.05, action_correlated=0.015)


class ContractState:
    def __init__(self, spec: ContractSpec, noise: ContractNoise = ContractNoise(),
                 rng: Optional[np.random.Generator] = None):
        self.spec = spec
        self.history = ObjectHistory(spec.thrower_base)
        self.stack = FrameStack()
        self.mapper = ActionMapper(spec)
        self.set_noise(noise, rng)

    def set_noise(self, noise: ContractNoise, rng: Optional[np.random.Generator] = None) -> None:
        """Change the noise (and its generator); the correlated parts are drawn here."""
        self.noise = noise
        self.rng = rng if rng is not None else np.random.default_rng()
        self._obs_corr = (self.rng.normal(0.0, noise.obs_correlated, FRAME_SIZE * STACK_FRAMES).astype(np.float32)
                          if noise.obs_correlated else None)
        self._act_corr = (self.rng.normal(0.0, noise.action_correlated, DOFS).astype(np.float32)
                          if noise.action_correlated else None)

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
        """Build this step's frame (with the history noise), push it on the stack, return the
        (thrower, catcher) 450-inputs (with the observation noise, if any)."""
        frame = build_frame(self.spec, thrower_q, catcher_q, goal_world, self.history.entries, predicted_goal_rel)
        n = self.noise
        if n.history:
            frame[CATCHER_HISTORY] += (self.rng.uniform(-1.0, 1.0, 12) * n.history).astype(np.float32)
        stacked = self.stack.push(frame)
        if n.obs_gaussian or self._obs_corr is not None:
            stacked = stacked + self.rng.normal(0.0, n.obs_gaussian, stacked.shape).astype(np.float32)
            if self._obs_corr is not None:
                stacked += self._obs_corr
        return agent_inputs(stacked)

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Map the 44 raw actions (plus the action noise, if any) to the 44 new joint targets (rad)."""
        n = self.noise
        if n.action_gaussian or self._act_corr is not None:
            action = np.asarray(action, dtype=np.float32).reshape(DOFS) + self.rng.normal(0.0, n.action_gaussian, DOFS).astype(np.float32)
            if self._act_corr is not None:
                action = action + self._act_corr
        return self.mapper.apply(action)
