"""The episode protocol, one place for every caller: the ROS 2 policy node and the twin's lockstep
episodes (:func:`handover.sim_twin.episode.run_protocol_episode`) run the same phases with the same
timing, so their numbers can be compared.

Pure Python + numpy: no ROS, no twin. The caller owns the clock and the devices; it calls
:meth:`EpisodeSequencer.tick` once per control period and does what the returned
:class:`SequencerTick` says (command the targets, ask for the object placement, report done).

Units and frames: times are seconds on the caller's clock (the control loop's deadlines
``t0 + k * period``, sim time or wall time alike); joint positions and targets are rad, 44 values in
contract order (thrower arm, hand, catcher arm, hand); efforts N*m in the same order.

Phases (each row: what one tick in that phase does; ``t`` is the tick's time, ``t0`` the phase's
reference time):

========  ==============================================================================================
phase     each tick
========  ==============================================================================================
IDLE      nothing before the first episode and after a stop or a fault; after an episode, the episode's
          last targets again (the hold), so that the catcher keeps holding the object it caught
BLEND     ``q0 + (reset - q0) * min_jerk((t - t0) / blend_s)`` with ``q0`` the positions measured at
          :meth:`~EpisodeSequencer.start` and ``t0`` the start's time: the first command is ``q0``
          (no jump). The tick where the profile reaches 1 commands the reset targets, asks for the
          object placement (``request_place``, once) and enters PLACE with ``t0 = t + period``
PLACE     the reset targets. Ends on the first tick with ``t - t0 >= settle_s`` (1 ns tolerance) once
          the placement was acknowledged (:meth:`~EpisodeSequencer.placed`); that tick enters WARMUP
WARMUP    the reset targets, and one dry policy step on the current inputs in the *dry* controller
          (``reset()`` then ``targets(...)``; result discarded), then the episode controller is reset.
          One tick; then EPISODE. The dry step runs in a second controller over the same networks:
          the contract's frame stack survives a reset (quirk of the original), so a dry step in the
          episode's own controller would leave its frame in the first observations
EPISODE   ``episode_steps`` ticks of ``controller.targets(t, q44, obs[, efforts=...])`` (step 0..N-1;
          ``result`` is the controller's ``last_result``: the predicted goal). The tick after the
          last one commands the last targets again and reports ``done`` (the episode is judged
          after at least one control period under the last command); then IDLE, holding
ESTOPPED  nothing, until :meth:`~EpisodeSequencer.release` (the caller's safety stop)
FAULT     nothing; :meth:`~EpisodeSequencer.abort` put it here (also from IDLE: the hold is dropped); the
          next start clears it, or :meth:`~EpisodeSequencer.clear_fault` (back to IDLE, nothing held)
========  ==============================================================================================

Tick counts, when ``blend_s`` and ``settle_s`` are whole numbers of periods (the ends are float
comparisons of deadline differences, as the node always did): BLEND takes ``blend_s / period + 1`` ticks (both ends
commanded), PLACE ``settle_s / period + 1`` ticks (entered one period after the blend's last tick;
the tick at ``t0 + settle_s`` is the last), WARMUP 1, EPISODE ``episode_steps + 1`` (the last
reports done). At 20 Hz, 1.0 s blend, 0.5 s settle, 30 steps: 21 + 11 + 1 + 31 = 64 ticks, the
first policy step at tick 33 (1.65 s after the start), done at tick 63 (3.15 s).

Invariants: at most one episode runs; the placement is requested exactly once per episode; the
dry controller's step never touches the episode controller; the controllers see ``efforts=`` only
when efforts were given. Not thread safe: one thread ticks it (other threads may read
:attr:`~EpisodeSequencer.phase`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from handover.drivers.object_tracker import ObjectObservation

N_JOINTS = 44
SETTLE_TOLERANCE_S = 1e-9  # the end of PLACE counts as reached this close before it (float deadlines)


class Phase(str, enum.Enum):
    IDLE = "idle"
    BLEND = "blend"
    PLACE = "place"
    WARMUP = "warmup"
    EPISODE = "episode"
    ESTOPPED = "estopped"
    FAULT = "fault"


ACTIVE_PHASES = (Phase.BLEND, Phase.PLACE, Phase.WARMUP, Phase.EPISODE)


def min_jerk(s: float) -> float:
    """The minimum-jerk profile 10 s^3 - 15 s^4 + 6 s^5 for s in [0, 1] (clipped): 0 -> 0, 1 -> 1,
    zero velocity and acceleration at both ends."""
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


class EpisodeController(Protocol):
    """What the sequencer needs of a controller (:class:`~handover.runtime.policy_controller.PolicyController`).

    ``targets`` is called with ``efforts=`` (44 N*m, contract order) only when the caller measured
    them. ``last_result`` (optional attribute): the last step's result (e.g. ``StepResult`` with
    ``predicted_goal_world``), or None."""

    def reset(self) -> np.ndarray:
        """Episode start; returns the 44 targets (rad) to hold before the first step."""
        ...

    def targets(self, t: float, joint_positions: np.ndarray, obs: ObjectObservation) -> np.ndarray:
        """44 joint targets (rad) for this control step."""
        ...


@dataclass(frozen=True)
class SequencerTick:
    """What to do this tick.

    ``phase``: the phase this tick ran in (whose rule made ``targets``; the sequencer may be in
    the next one already, see :attr:`EpisodeSequencer.phase`). ``targets``: 44 rad, contract order,
    to command now, or None (command nothing). ``request_place``: ask for the object placement now
    (True on exactly one tick per episode: the blend's last) and answer with
    :meth:`EpisodeSequencer.placed`. ``step``: the policy step index 0..N-1 on an EPISODE tick that
    ran the policy, else None. ``result``: the controller's ``last_result`` of that step (the
    predicted goal), else None. ``done``: the episode's last tick (one period after the last policy
    step; ``targets`` are the held last targets)."""

    phase: Phase
    targets: Optional[np.ndarray] = None
    request_place: bool = False
    step: Optional[int] = None
    result: Any = None
    done: bool = False


def _check_q44(name: str, value, allow_none: bool = False) -> Optional[np.ndarray]:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"EpisodeSequencer: {name} is required in this phase (44 values, contract order)")
    a = np.asarray(value, dtype=float)
    if a.shape != (N_JOINTS,):
        raise ValueError(f"EpisodeSequencer: {name} must have shape ({N_JOINTS},), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"EpisodeSequencer: {name}[{int(np.flatnonzero(~np.isfinite(a))[0])}] is not finite")
    return a


class EpisodeSequencer:
    """The episode protocol (see the module docstring) over two controllers of one policy.

    ``period_s``: the control period (s); ``blend_s``: duration of the blend to the reset pose
    (s, > 0); ``settle_s``: how long the reset pose is held after the placement was requested
    (s, >= 0); ``episode_steps``: policy steps per episode (>= 1); ``controller``: the episode's
    controller; ``dry_controller``: a second controller over the same networks, used only for the
    warm-up's dry step.
    """

    def __init__(self, controller: EpisodeController, dry_controller: EpisodeController, *, period_s: float,
                 episode_steps: int, blend_s: float = 1.0, settle_s: float = 0.5):
        if not (math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"EpisodeSequencer: period_s must be a positive number of seconds, got {period_s!r}")
        if not (math.isfinite(blend_s) and blend_s > 0):
            raise ValueError(f"EpisodeSequencer: blend_s must be a positive number of seconds, got {blend_s!r}")
        if not (math.isfinite(settle_s) and settle_s >= 0):
            raise ValueError(f"EpisodeSequencer: settle_s must be >= 0 s, got {settle_s!r}")
        if isinstance(episode_steps, bool) or int(episode_steps) != episode_steps or episode_steps < 1:
            raise ValueError(f"EpisodeSequencer: episode_steps must be an integer >= 1, got {episode_steps!r}")
        if controller is dry_controller:
            raise ValueError("EpisodeSequencer: the dry controller must be a second controller, not the episode's own")
        self.controller = controller
        self.dry_controller = dry_controller
        self.period_s = float(period_s)
        self.blend_s = float(blend_s)
        self.settle_s = float(settle_s)
        self.episode_steps = int(episode_steps)
        self.phase = Phase.IDLE  # may be read by other threads
        self.fault = ""  # why the last episode was aborted ("" if it was not)
        self.step = 0  # policy steps taken in the current/last episode
        self._t0 = 0.0  # the phase's reference time, s (caller's clock)
        self._blend_from: Optional[np.ndarray] = None  # q44 measured at the start, rad
        self._reset_targets: Optional[np.ndarray] = None  # the controller's reset targets, rad
        self._hold: Optional[np.ndarray] = None  # the last episode's last targets, rad
        self._placed = False  # the placement was acknowledged in this episode

    # -- state -----------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """An episode is under way (BLEND to EPISODE)."""
        return self.phase in ACTIVE_PHASES

    @property
    def hold_targets(self) -> Optional[np.ndarray]:
        """The targets IDLE commands after an episode (its last policy targets, rad; during EPISODE the
        latest step's), or None: nothing is held before the first episode, from a start until the
        first policy step, and after a stop or a fault."""
        return None if self._hold is None else self._hold.copy()

    @property
    def reset_targets(self) -> Optional[np.ndarray]:
        """The current episode's reset targets (rad; the controller's ``reset()``), None before a start."""
        return None if self._reset_targets is None else self._reset_targets.copy()

    # -- commands from the caller ----------------------------------------------------------------

    def start(self, t: float, q44) -> tuple[bool, str]:
        """Start an episode at time ``t`` (s) from the measured positions ``q44`` (rad). Refused
        (False and the reason; nothing changes) while an episode runs or the stop is latched.
        Clears a fault and the hold; resets the episode controller. The next :meth:`tick` (normally
        at the same ``t``) is the blend's first. ValueError if ``q44`` (or the reset targets) are not
        44 finite values."""
        if self.active:
            return False, f"refused: an episode is running (phase {self.phase.value})"
        if self.phase is Phase.ESTOPPED:
            return False, "refused: the stop is latched (release() first)"
        q = _check_q44("q44", q44)
        reset = _check_q44("controller.reset()", self.controller.reset())
        self._blend_from, self._reset_targets = q, reset
        self.fault = ""
        self._hold = None
        self._placed = False
        self.step = 0
        self._enter(Phase.BLEND, float(t))
        return True, (f"blend to the reset pose over {self.blend_s:g} s, place the object, settle "
                      f"{self.settle_s:g} s, then {self.episode_steps} policy steps")

    def placed(self, ok: bool, why: str = "") -> None:
        """The answer to ``request_place``: ``ok`` acknowledges (PLACE may end once ``settle_s`` has
        passed); a failure aborts the episode (FAULT, ``why`` in :attr:`fault`). Ignored when no
        episode is waiting for it (e.g. a late answer after an abort)."""
        if self.phase is not Phase.PLACE or self._placed:
            return
        if ok:
            self._placed = True
        else:
            self.abort(f"the object placement failed: {why or 'no reason given'}")

    def abort(self, reason: str) -> None:
        """Abort (a fault of the inputs, the policy or the placement): FAULT, nothing is commanded and
        nothing held until the next start. :attr:`fault` becomes ``"aborted in phase P: reason"``."""
        self.fault = f"aborted in phase {self.phase.value}: {reason}"
        self._hold = None
        self._enter(Phase.FAULT, self._t0)

    def stop(self, latched: bool = True) -> None:
        """The caller's safety stop: ends any episode and drops the hold (nothing is commanded).
        ESTOPPED while ``latched`` (until :meth:`release`), else IDLE (a stop already released when
        the caller saw it)."""
        self._hold = None
        self._enter(Phase.ESTOPPED if latched else Phase.IDLE, self._t0)

    def release(self) -> None:
        """The stop was released: ESTOPPED -> IDLE (commanding nothing until the next start). No-op in other phases."""
        if self.phase is Phase.ESTOPPED:
            self._enter(Phase.IDLE, self._t0)

    def clear_fault(self) -> None:
        """The caller's fault is over (e.g. the cell's joint states came back): FAULT -> IDLE,
        commanding nothing (the hold was dropped by :meth:`abort`) until the next start. Keeps
        :attr:`fault` (why the last episode ended) until then. No-op in other phases."""
        if self.phase is Phase.FAULT:
            self._enter(Phase.IDLE, self._t0)

    # -- the tick --------------------------------------------------------------------------------

    def tick(self, t: float, q44, obs: ObjectObservation, efforts44=None) -> SequencerTick:
        """One control period at time ``t`` (s, caller's clock, the period's deadline): ``q44`` the
        measured positions (rad; may be None outside WARMUP and EPISODE), ``obs`` the tracker's
        latest observation (world, m), ``efforts44`` the measured efforts (N*m) or None. Controller
        exceptions propagate (the caller aborts)."""
        t = float(t)
        phase = self.phase
        if phase is Phase.BLEND:
            return self._tick_blend(t)
        if phase is Phase.PLACE:
            return self._tick_place(t)
        if phase is Phase.WARMUP:
            return self._tick_warmup(t, q44, obs, efforts44)
        if phase is Phase.EPISODE:
            return self._tick_episode(t, q44, obs, efforts44)
        if phase is Phase.IDLE:
            return SequencerTick(phase, targets=self.hold_targets)
        return SequencerTick(phase)  # ESTOPPED, FAULT: nothing

    def _enter(self, phase: Phase, t0: float) -> None:
        self.phase = phase
        self._t0 = t0

    def _tick_blend(self, t: float) -> SequencerTick:
        q0, reset = self._blend_from, self._reset_targets
        s = min_jerk((t - self._t0) / self.blend_s)
        if s < 1.0:
            return SequencerTick(Phase.BLEND, targets=q0 + (reset - q0) * s)
        self._enter(Phase.PLACE, t + self.period_s)
        return SequencerTick(Phase.BLEND, targets=reset.copy(), request_place=True)

    def _tick_place(self, t: float) -> SequencerTick:
        if self._placed and t - self._t0 >= self.settle_s - SETTLE_TOLERANCE_S:
            self._enter(Phase.WARMUP, t)
        return SequencerTick(Phase.PLACE, targets=self._reset_targets.copy())

    def _policy_targets(self, controller: EpisodeController, t: float, q: np.ndarray, obs: ObjectObservation,
                        efforts: Optional[np.ndarray]) -> np.ndarray:
        raw = controller.targets(t, q, obs) if efforts is None else controller.targets(t, q, obs, efforts=efforts)
        return _check_q44(f"{type(controller).__name__}.targets()", raw)

    def _tick_warmup(self, t: float, q44, obs: ObjectObservation, efforts44) -> SequencerTick:
        q = _check_q44("q44", q44)
        efforts = _check_q44("efforts44", efforts44, allow_none=True)
        self.dry_controller.reset()
        self._policy_targets(self.dry_controller, t, q, obs, efforts)  # the dry step: result discarded
        self.controller.reset()  # the networks' recurrent state back to the episode start
        self.step = 0
        self._enter(Phase.EPISODE, t + self.period_s)
        return SequencerTick(Phase.WARMUP, targets=self._reset_targets.copy())

    def _tick_episode(self, t: float, q44, obs: ObjectObservation, efforts44) -> SequencerTick:
        if self.step >= self.episode_steps:  # one period after the last command
            self._enter(Phase.IDLE, t)
            return SequencerTick(Phase.EPISODE, targets=self.hold_targets, done=True)
        q = _check_q44("q44", q44)
        efforts = _check_q44("efforts44", efforts44, allow_none=True)
        targets = self._policy_targets(self.controller, t, q, obs, efforts)
        step = self.step
        self.step += 1
        self._hold = targets.copy()
        return SequencerTick(Phase.EPISODE, targets=targets, step=step,
                             result=getattr(self.controller, "last_result", None))
