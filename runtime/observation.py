"""The observation side of the contract: object history, the 300-number frame, the 3-frame stack
and the per-agent 450-number inputs. Pure numpy, float32 at the interface.

Built once and used everywhere (twin, hardware, replay, evaluation): a policy only works if its
observation is rebuilt exactly like the training environment's, quirks included.
"""

from __future__ import annotations

import numpy as np

from handover.runtime.contract import (
    AGENT_INPUT_SIZE,
    CATCHER_HISTORY,
    CATCHER_PRED_GOAL,
    CATCHER_Q,
    ContractSpec,
    FRAME_SIZE,
    HALF_FRAME,
    HISTORY_IN_OBS,
    HISTORY_LEN,
    OBS_CLIP,
    STACK_FRAMES,
    THROWER_GOAL,
    THROWER_Q,
    unscale,
)


class ObjectHistory:
    """20-entry FIFO of object positions relative to the thrower arm base (m), oldest first.

    Updated once per control step, before the observation is built; zeroed at episode reset.
    """

    def __init__(self, thrower_base: np.ndarray):
        self._base = np.asarray(thrower_base, dtype=np.float32)
        self.entries = np.zeros((HISTORY_LEN, 3), dtype=np.float32)

    def reset(self) -> None:
        self.entries[:] = 0.0

    def push(self, object_pos_world: np.ndarray) -> None:
        """Drop the oldest entry and append ``object_pos_world - thrower_base``."""
        self.entries[:-1] = self.entries[1:]
        self.entries[-1] = np.asarray(object_pos_world, dtype=np.float32) - self._base

    def flat(self) -> np.ndarray:
        """The 60-number goal-estimator input: ``[x0, y0, z0, x1, ...]``, oldest first."""
        return self.entries.reshape(-1).copy()


def build_frame(
    spec: ContractSpec,
    thrower_q: np.ndarray,
    catcher_q: np.ndarray,
    goal_world: np.ndarray,
    history: np.ndarray,
    predicted_goal_rel: np.ndarray,
) -> np.ndarray:
    """One 300-number observation frame.

    Args:
        thrower_q, catcher_q: 22 joint positions each (rad), contract order.
        goal_world: goal position, world frame (m).
        history: (20, 3) object history, relative to the thrower base, oldest first.
        predicted_goal_rel: goal-estimator output (3), relative to the thrower base (m).
    """
    lo, hi = spec.thrower_lower, spec.thrower_upper
    frame = np.zeros(FRAME_SIZE, dtype=np.float32)
    tq = np.asarray(thrower_q, dtype=np.float32)
    cq = np.asarray(catcher_q, dtype=np.float32)

    # Thrower: normalized joints, arm zeroed, then only arm joints 2 and 3 (index 1, 2) raw (quirk).
    t = frame[THROWER_Q]
    t[:] = unscale(tq, lo, hi)
    t[0:6] = 0.0
    t[1:3] = tq[1:3]
    frame[THROWER_GOAL] = np.asarray(goal_world, dtype=np.float32) - spec.thrower_base

    # Catcher: normalized with the *thrower's* limits (quirk), arm raw, arm joints 1 and 4 zeroed.
    c = frame[CATCHER_Q]
    c[:] = unscale(cq, lo, hi)
    c[0:6] = cq[0:6]
    c[0] = 0.0
    c[3] = 0.0
    frame[CATCHER_HISTORY] = np.asarray(history, dtype=np.float32)[HISTORY_IN_OBS].reshape(-1)
    frame[CATCHER_PRED_GOAL] = predicted_goal_rel
    return frame


class FrameStack:
    """The env's 900-number buffer ``[current, previous, the one before]``.

    Quirk: :meth:`push` is all there is; the original never clears the stack at episode reset,
    so frames from the previous episode are carried over. Only a fresh start (a new object) is
    all zeros.
    """

    def __init__(self) -> None:
        self.buffer = np.zeros(FRAME_SIZE * STACK_FRAMES, dtype=np.float32)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Shift the older frames back, put ``frame`` first, return the 900-vector (a view)."""
        self.buffer[FRAME_SIZE:] = self.buffer[: FRAME_SIZE * (STACK_FRAMES - 1)].copy()
        self.buffer[:FRAME_SIZE] = frame
        return self.buffer


def agent_inputs(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip the 900-vector to [-5, 5] and split it into the thrower's and the catcher's 450 inputs.

    Thrower: ``obs[0:150] ++ obs[300:450] ++ obs[600:750]``;
    catcher: ``obs[150:300] ++ obs[450:600] ++ obs[750:900]``.
    """
    per_frame = np.clip(np.asarray(stacked, dtype=np.float32), -OBS_CLIP, OBS_CLIP).reshape(STACK_FRAMES, 2, HALF_FRAME)
    thrower = per_frame[:, 0, :].reshape(AGENT_INPUT_SIZE)  # copies: the slice is not contiguous
    catcher = per_frame[:, 1, :].reshape(AGENT_INPUT_SIZE)
    return thrower, catcher


__all__ = ["ObjectHistory", "build_frame", "FrameStack", "agent_inputs"]
