"""The numbers of the Dynamic Handover policy contract that are not cell configuration.

Source: ``shared/reference/dynamic-handover-contract.md`` (task ``AllegroHandDynamicHandover``).
Everything here is a fact of the training environment; the oddities marked *quirk* there are
reproduced on purpose by :mod:`handover.runtime.observation` and :mod:`handover.runtime.action`.

Index layout (44 entries): thrower 0..21, catcher 22..43; per side arm joints 0..5, hand 6..21.
All arrays at the interface are ``float32``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handover.runtime.cell_config import CellConfig, SIDE_DOFS

# /2: the hand slots in the training simulator's DOF order (index, thumb, middle, ring), the
# catcher-hand quirk of the action moving average, 20 Hz control.
CONTRACT_VERSION = "dynamic-handover/2"

DOFS = 2 * SIDE_DOFS  # 44
FRAME_SIZE = 300  # one observation frame
HALF_FRAME = 150  # thrower part 0..149, catcher part 150..299
STACK_FRAMES = 3  # frames kept by the env (900 numbers)
AGENT_INPUT_SIZE = HALF_FRAME * STACK_FRAMES  # 450
AGENT_ACTION_SIZE = SIDE_DOFS  # 22
HISTORY_LEN = 20  # object-history FIFO entries
HISTORY_IN_OBS = slice(12, 16)  # history entries copied into the catcher part (quirk: 4..7 steps old)
OBS_CLIP = 5.0  # per-agent inputs are clipped to [-5, 5]

# Frame-local offsets (contract section "Observation").
THROWER_Q = slice(0, 22)
THROWER_GOAL = slice(22, 25)
CATCHER_Q = slice(150, 172)
CATCHER_HISTORY = slice(150 + 98, 150 + 110)
CATCHER_PRED_GOAL = slice(150 + 110, 150 + 113)

# Action rules (contract section "Action").
THROWER_ARM_GAIN = 2.0  # rad per step per unit action (quirk), joints 1 and 2 only
CATCHER_ARM_GAIN = 0.1  # rad per step per unit action, all six catcher arm joints
ACTION_MOVING_AVERAGE = 1.0  # the shipped config's actionsMovingAverage (applied with the catcher quirk)
HISTORY_NOISE = 0.05  # U(-1, 1) * 0.05 added per step to the catcher's 12 history entries (always, in evaluation too)

PROPERTY_HISTORY_LEN = 20  # k: steps of (object position, 44 joint positions) for the property estimator
PROPERTY_STEP_SIZE = 3 + DOFS  # 47 numbers per step


# The contract's other helper, scale(a, lo, hi) = (a + 1) / 2 * (hi - lo) + lo, is computed in
# handover.runtime.action (with its half range precomputed).


def unscale(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map [lo, hi] to [-1, 1]: ``(2x - hi - lo) / (hi - lo)`` (float32 in, float32 out)."""
    return (2.0 * x - hi - lo) / (hi - lo)


@dataclass(frozen=True)
class ContractSpec:
    """The cell-dependent numbers the contract needs, as float32 arrays.

    ``lower``/``upper``/``default`` have 44 entries in contract order (rad).
    ``thrower_base`` is the thrower arm base position in the world frame (m); object and goal
    positions enter the observation as plain differences to it (no rotation).
    """

    lower: np.ndarray
    upper: np.ndarray
    default: np.ndarray
    thrower_base: np.ndarray

    @staticmethod
    def from_config(cfg: CellConfig) -> "ContractSpec":
        f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
        spec = ContractSpec(
            lower=f32(cfg.thrower.lower + cfg.catcher.lower),
            upper=f32(cfg.thrower.upper + cfg.catcher.upper),
            default=f32(cfg.thrower.default + cfg.catcher.default),
            thrower_base=f32(cfg.thrower.base_position),
        )
        for a in (spec.lower, spec.upper, spec.default, spec.thrower_base):
            a.setflags(write=False)
        return spec

    @property
    def thrower_lower(self) -> np.ndarray:
        return self.lower[:SIDE_DOFS]

    @property
    def thrower_upper(self) -> np.ndarray:
        return self.upper[:SIDE_DOFS]

    @property
    def catcher_lower(self) -> np.ndarray:
        return self.lower[SIDE_DOFS:]

    @property
    def catcher_upper(self) -> np.ndarray:
        return self.upper[SIDE_DOFS:]
