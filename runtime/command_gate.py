"""The command gate: every position command passes it on its way to a joint group, whatever the
backend (twin, mirror, hardware). Pure: numpy only, no ROS, no devices; the state is an immutable
value and every function returns a new one. :class:`~handover.drivers.joint_group.JointGroup` owns
one gate per device, reads the device where a rule needs the measured position, and sends what the
gate lets through.

Units: positions rad, speeds rad/s, time s (the caller's clock, as for the devices: monotonic time on
hardware, simulation time in the twin). Arrays are per joint, in the group's order
(:attr:`GateLimits.names`, the cell config's contract slot order).

Modes: the gate is FOLLOWING a command stream or HOLDING a position. Its *reference* is the last
target it let through while following, and the held position while holding.

Rules (:func:`gate_command` applies them in this order):

(e) Names. With ``names`` (a ROS message's), every joint of the group must appear exactly once;
    duplicate, unknown and missing names are refused, and the targets are reordered by name into
    the group's order. Without names, exactly one target per joint, in the group's order.
(a) Finite. A target that is NaN or infinite is refused; the reason names the joint and the value.
    A refused command changes no target; a group that was following must hold (``decision.hold``).
(b) Position limits. Targets are clamped to ``[lower, upper]`` (the training limits).
(c) Rate. Each joint's change from the reference is cut to ``max_step`` = velocity limit x control
    period (arm: 3.14 rad/s x 0.05 s = 0.157 rad per command): a 0.9 rad jump takes six commands.
(d) Staleness. A group that follows a stream and gets no new command for more than ``stale_s`` =
    stale periods x control period (3 x 0.05 s = 0.15 s) holds its measured position
    (:func:`gate_poll`). So does a group whose caller's clock went back (``now`` before the last
    command or hold: a simulation reset, a new clock): its reference no longer says where the joints
    are. A stale state refuses commands (:func:`gate_command`) until :func:`gate_poll` has taken the
    measured position, so no command is ever rate-limited from a reference that may be wrong.

Holding (:func:`hold_state`): the target is the measured position *as is*, even outside the limits
(the contract's default hand pose has ring joint_9.0 at 1.72 > 1.61 rad), so that holding never moves
a joint; the next command starts from there, rate-limited.

Invariants of every target the gate lets through:

- finite, one per joint, in the group's order;
- within ``max_step`` of the reference, joint by joint;
- within the limits. (One exception, which keeps the rate rule: a joint held more than ``max_step``
  outside its limits moves ``max_step`` toward them per command instead of jumping in. The cell's
  default pose is at most 0.11 rad outside, less than one step, so it is clamped in one command.)

Refusals and holds never move a joint: a refused command sends nothing, a hold sends the measured
position.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


def _frozen(values) -> np.ndarray:
    """A read-only float64 copy (the state and decisions are values: nobody may change them)."""
    out = np.array(values, dtype=np.float64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class GateLimits:
    """What the gate enforces for one joint group.

    ``names``: joint names in the group's order. ``lower``/``upper``: position limits, rad.
    ``max_step``: the largest change of a target from one command to the next, rad (velocity
    limit x control period). ``stale_s``: how long a followed stream may pause before the group
    holds, s (stale periods x control period)."""

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_step: tuple[float, ...]
    stale_s: float

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ValueError("GateLimits: a joint group needs at least one joint")
        if len(set(self.names)) != n or not all(isinstance(s, str) and s for s in self.names):
            raise ValueError(f"GateLimits: joint names must be distinct non-empty strings, got {list(self.names)}")
        for label in ("lower", "upper", "max_step"):
            values = getattr(self, label)
            if len(values) != n:
                raise ValueError(f"GateLimits: {label} needs {n} values (one per joint), got {len(values)}")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"GateLimits: {label} must be finite, got {list(values)}")
        for name, lo, hi in zip(self.names, self.lower, self.upper):
            if not lo <= hi:
                raise ValueError(f"GateLimits: {name}: lower limit {lo} rad is above upper limit {hi} rad")
        for name, step in zip(self.names, self.max_step):
            if not step > 0:
                raise ValueError(f"GateLimits: {name}: max_step must be > 0 rad, got {step}")
        if not (math.isfinite(self.stale_s) and self.stale_s > 0):
            raise ValueError(f"GateLimits: stale_s must be a finite number > 0 s, got {self.stale_s}")

    @property
    def size(self) -> int:
        return len(self.names)

    @staticmethod
    def from_limits(names: Sequence[str], lower: Sequence[float], upper: Sequence[float],
                    velocity_limit: Sequence[float], control_period_s: float, stale_periods: float) -> "GateLimits":
        """From per-joint speed limits (rad/s), the control period (s) and the stale periods."""
        if not (math.isfinite(control_period_s) and control_period_s > 0):
            raise ValueError(f"GateLimits: control_period_s must be a finite number > 0 s, got {control_period_s}")
        if not (math.isfinite(stale_periods) and stale_periods > 0):
            raise ValueError(f"GateLimits: stale_periods must be a finite number > 0, got {stale_periods}")
        if any(not (math.isfinite(v) and v > 0) for v in velocity_limit):
            raise ValueError(f"GateLimits: velocity limits must be finite numbers > 0 rad/s, "
                             f"got {list(velocity_limit)}")
        return GateLimits(
            names=tuple(names),
            lower=tuple(float(v) for v in lower),
            upper=tuple(float(v) for v in upper),
            max_step=tuple(float(v) * float(control_period_s) for v in velocity_limit),
            stale_s=float(stale_periods) * float(control_period_s),
        )

    @staticmethod
    def from_config(group_cfg, gate_cfg, control_period_s: float) -> "GateLimits":
        """From a :class:`~handover.runtime.cell_config.JointGroupConfig` (joints, lower, upper,
        velocity_limit), a :class:`~handover.runtime.cell_config.GateConfig` (stale_periods) and
        the cell's control period (``cfg.control_period_s``, s)."""
        return GateLimits.from_limits(group_cfg.joints, group_cfg.lower, group_cfg.upper, group_cfg.velocity_limit,
                                      control_period_s, gate_cfg.stale_periods)


class GateMode(str, enum.Enum):
    FOLLOWING = "following"  # the reference is the last target let through
    HOLDING = "holding"  # the reference is the held (measured) position


@dataclass(frozen=True, eq=False)
class GateState:
    """The gate's memory (immutable). ``reference``: (n,) rad, read-only. ``since``: s, the time of
    the last accepted command (FOLLOWING) or of the hold (HOLDING). ``why``: why it holds."""

    mode: GateMode
    reference: np.ndarray
    since: float
    why: str = ""


@dataclass(frozen=True, eq=False)
class GateDecision:
    """What the gate did with one command (arrays (n,) rad in the group's order, read-only).

    - ``accepted``: the command passes; ``targets`` is what to send (``None`` if refused).
    - ``reference``: what the change was limited against (``None`` if the gate had none to use).
    - ``requested``: the targets as received, reordered by name (``None`` if they did not fit).
    - ``clamped`` / ``rate_limited``: the joints whose target was cut to the position limits / to
      ``max_step`` (empty tuples when none: usable as flags).
    - ``reason``: why it was refused (names the joints and values), else ``""``.
    - ``hold``: refused while following: the caller must hold the measured position now
      (:func:`hold_state`).
    """

    accepted: bool
    now: float
    targets: Optional[np.ndarray] = None
    reference: Optional[np.ndarray] = None
    requested: Optional[np.ndarray] = None
    clamped: tuple[str, ...] = field(default=())
    rate_limited: tuple[str, ...] = field(default=())
    reason: str = ""
    hold: bool = False


def hold_state(measured, now: float, why: str = "hold") -> GateState:
    """HOLDING at ``measured`` (rad, as is: even outside the limits) from ``now`` (s)."""
    position = np.asarray(measured, dtype=np.float64).reshape(-1)
    if position.size == 0 or not np.isfinite(position).all():
        raise ValueError(f"cannot hold: the measured position is not finite: {position}")
    if not math.isfinite(now):
        raise ValueError(f"cannot hold: time is not finite: {now}")
    return GateState(GateMode.HOLDING, _frozen(position), float(now), why)


def staleness(limits: GateLimits, state: GateState, now: float) -> Optional[str]:
    """Why the group must hold its measured position at ``now`` (s) before anything else, or
    ``None``: a followed stream paused more than ``stale_s``, or the clock went back."""
    if now < state.since:
        return f"the clock went back from {state.since:.6g} s to {now:.6g} s"
    if state.mode is GateMode.FOLLOWING and now - state.since > limits.stale_s:
        return (f"the command stream went stale: no command for {now - state.since:.3g} s "
                f"(more than {limits.stale_s:.3g} s)")
    return None


def gate_poll(limits: GateLimits, state: GateState, now: float, measured) -> tuple[bool, GateState]:
    """Rule (d): ``(True, HOLDING at measured)`` if :func:`staleness` says the group must hold, else
    ``(False, state)``. ``measured``: the position (rad) at ``now``."""
    reason = staleness(limits, state, now)
    if reason is None:
        return False, state
    return True, hold_state(measured, now, reason)


def _refuse(state: GateState, now: float, reason: str, requested=None) -> tuple[GateDecision, GateState]:
    following = state.mode is GateMode.FOLLOWING
    return GateDecision(False, now, reference=state.reference, requested=requested, reason=reason,
                        hold=following), state


def _by_name(limits: GateLimits, names: Sequence, values: np.ndarray) -> tuple[Optional[np.ndarray], str]:
    """Rule (e): ``values`` (one per name) in the group's order, or ``(None, why not)``."""
    names = [str(n) for n in names]
    if len(names) != values.size:
        return None, f"{len(names)} names but {values.size} targets"
    seen, duplicates = set(), []
    for n in names:
        if n in seen and n not in duplicates:
            duplicates.append(n)
        seen.add(n)
    problems = []
    if duplicates:
        problems.append(f"duplicate joint names {duplicates}")
    unknown = [n for n in names if n not in limits.names]
    if unknown:
        problems.append(f"unknown joints {unknown} (not in this group)")
    missing = [n for n in limits.names if n not in seen]
    if missing:
        problems.append(f"joints {missing} missing")
    if problems:
        return None, "; ".join(problems) + f" (got {names})"
    index = {n: i for i, n in enumerate(names)}
    return np.array([values[index[n]] for n in limits.names], dtype=np.float64), ""


def gate_command(limits: GateLimits, state: GateState, targets, now: float,
                 names: Optional[Sequence[str]] = None) -> tuple[GateDecision, GateState]:
    """Gate one command: ``targets`` (rad; in the group's order, or matched by ``names``) at ``now``
    (s). Returns the decision and the new state (FOLLOWING the targets let through, or the old
    state when refused; then ``decision.hold`` says the caller must hold the measured position).

    ``state`` must not be stale (:func:`staleness`; call :func:`gate_poll` first): a stale state
    refuses the command, since its reference may not be where the joints are."""
    now = float(now)
    if not math.isfinite(now):
        return _refuse(state, now, f"time is not finite: {now}")
    reference = np.asarray(state.reference, dtype=np.float64)
    if reference.shape != (limits.size,):
        raise ValueError(f"gate state has {reference.size} reference values for {limits.size} joints")
    stale = staleness(limits, state, now)
    if stale is not None:
        return _refuse(state, now, f"{stale}: hold the measured position first (gate_poll)")
    try:
        raw = np.asarray(targets, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        return _refuse(state, now, f"targets are not numbers: {exc}")
    if names is not None:
        ordered, why = _by_name(limits, names, raw)
        if ordered is None:
            return _refuse(state, now, why)
        raw = ordered
    elif raw.shape != (limits.size,):
        return _refuse(state, now, f"command needs {limits.size} targets, got {raw.size}")
    bad = np.flatnonzero(~np.isfinite(raw))
    if bad.size:
        which = ", ".join(f"{limits.names[i]} = {raw[i]}" for i in bad)
        return _refuse(state, now, f"command target not finite: {which}", _frozen(raw))

    lower, upper = np.asarray(limits.lower), np.asarray(limits.upper)
    step = np.asarray(limits.max_step)
    inside = np.clip(raw, lower, upper)  # (b)
    out = np.clip(inside, reference - step, reference + step)  # (c)
    decision = GateDecision(
        accepted=True, now=now, targets=_frozen(out), reference=state.reference, requested=_frozen(raw),
        clamped=tuple(n for n, c in zip(limits.names, inside != raw) if c),
        rate_limited=tuple(n for n, c in zip(limits.names, out != inside) if c),
    )
    return decision, GateState(GateMode.FOLLOWING, decision.targets, now, "")
