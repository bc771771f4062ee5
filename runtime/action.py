"""The action side of the contract: 44 raw policy outputs to 44 joint position targets (rad).

Rules (``dynamic-handover-contract.md``, section "Action"); ``a`` is clipped to [-1, 1] first:

- thrower hand ``cur[6:22] = scale(a[6:22], lo[6:22], hi[6:22])`` (absolute);
- thrower arm ``cur[1] = prev[1] + 2 a[1]``, ``cur[2] = prev[2] + 2 a[2]`` (quirk: 2 rad per step),
  the other thrower arm joints keep their previous target;
- catcher arm ``cur[22:28] = prev[22:28] + 0.1 a[22:28]`` (relative);
- catcher hand ``cur[28:44] = scale(a[28:44], lo[6:22], hi[6:22])`` (the thrower's hand limits);
- the action moving average ``m`` (1.0 in the shipped config): ``cur[6:22] = m cur[6:22] + (1 - m)
  prev[6:22]`` for the thrower hand and, **quirk**, ``cur[28:44] = m cur[22:38] + (1 - m) prev[22:38]``
  for the catcher hand (the original adds 22 instead of 28 to the joint indices). The right-hand
  side is a copy taken before the assignment. With m = 1 the catcher's hand slots 0..5 get the
  catcher *arm* targets of this step and hand slots 6..15 the values scaled from the actions meant
  for hand slots 0..9; actions 38..43 have no effect;
- clamp thrower targets to the thrower's limits, catcher targets to the catcher's.

Slots are the training simulator's DOF order (hand: index, thumb, middle, ring); the cell config
names the physical joint of each slot.
"""

from __future__ import annotations

import numpy as np

from handover.runtime.contract import (
    ACTION_MOVING_AVERAGE,
    CATCHER_ARM_GAIN,
    DOFS,
    THROWER_ARM_GAIN,
    ContractSpec,
)


class ActionMapper:
    """Holds the previous targets and turns each raw action into new targets."""

    def __init__(self, spec: ContractSpec):
        self.spec = spec
        self.targets = np.zeros(DOFS, dtype=np.float32)
        # scale(a, lo, hi) = (a + 1) / 2 * (hi - lo) + lo, computed as (a + 1) * half + lo with
        # half = (hi - lo) / 2: halving is exact in binary floating point, so the result is the
        # same number. Both hands use the thrower's hand limits.
        self._hand_lo = spec.lower[6:22].copy()
        self._hand_half = ((spec.upper[6:22] - spec.lower[6:22]) / np.float32(2.0)).astype(np.float32)
        self.reset()

    def reset(self) -> np.ndarray:
        """Targets back to the default pose (clamped to the limits, which leaves every entry the
        rules ever read unchanged: only one default hand slot lies outside its limits (13, ring
        joint_9.0), and hand targets are absolute). Returns a copy of the targets."""
        self.targets[:] = np.clip(self.spec.default, self.spec.lower, self.spec.upper)
        return self.targets.copy()

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Map one 44-number raw action (thrower 0..21 ++ catcher 22..43) to new targets (rad)."""
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(DOFS), -1.0, 1.0)
        prev = self.targets.copy()
        cur = self.targets  # becomes this step's targets; until written, entries hold prev
        cur[1:3] += THROWER_ARM_GAIN * a[1:3]  # thrower arm joints 2 and 3, relative (quirk: gain 2)
        cur[22:28] += CATCHER_ARM_GAIN * a[22:28]  # catcher arm, relative
        cur[6:22] = (a[6:22] + 1.0) * self._hand_half + self._hand_lo  # thrower hand, absolute
        cur[28:44] = (a[28:44] + 1.0) * self._hand_half + self._hand_lo  # catcher hand, absolute
        m = np.float32(ACTION_MOVING_AVERAGE)
        cur[6:22] = m * cur[6:22] + (1 - m) * prev[6:22]
        cur[28:44] = m * cur[22:38] + (1 - m) * prev[22:38]  # quirk: 22..37, not 28..43 (a copy: RHS first)
        np.clip(cur, self.spec.lower, self.spec.upper, out=cur)
        return cur.copy()
