"""Physical plausibility of the policy's inputs: pure rules, bounds from the cell config.

A message that is well formed (right names, finite numbers) can still say something that cannot be
true: an object 1e30 m away, a joint 10 rad beyond its hard stop, a stamp an hour from now. Such a
message is *invalid*: the policy node never uses it (it does not even count as a sign of life of
its sender) and counts it per topic and kind on ``/diagnostics`` (:class:`RejectionLog`).

Rules (each function returns an :class:`Implausible` naming the value, the bound and the source,
or None):

- :func:`object_problem`: an object position (world frame, m) with a coordinate outside the
  cell's workspace box ``[workspace_lower, workspace_upper]`` (bounds included) is
  ``outside_workspace``. A non-finite point is not judged here: by the tracker's convention it
  means "object not found".
- :func:`joint_problem`: a joint position (rad) more than ``joint_margin`` beyond its joint's
  *hardware* range (``joint_ranges.<side>.<group>.hardware_lower``/``hardware_upper``, which the
  cell config checks to contain the training limits ``lower``/``upper``) is ``outside_joint_range``. The margin
  allows encoder offsets and overshoot at the hard stop; beyond it the reading is not a joint angle.
- :func:`stamp_problem`: a stamp (s, on the node's clock: sim time under ``use_sim_time``) more
  than ``stamp_future_s`` after the node's now is ``stamp_future``, more than ``stamp_past_s``
  before it ``stamp_past``. Not judged while the node's clock has no time yet (``now_s`` None: sim
  time before the first ``/clock``).

Invariants: the bounds are finite, ``workspace_lower < workspace_upper`` per axis and
``hardware_lower < hardware_upper`` per joint, the margin is >= 0 and the two stamp bounds are > 0
(:class:`PlausibilityConfig` refuses anything else; the cell config loader also checks that each
hardware range has its group's length and contains the training range, and that the workspace holds
the arm bases, the object's start and the goal box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

OUTSIDE_WORKSPACE = "outside_workspace"
OUTSIDE_JOINT_RANGE = "outside_joint_range"
STAMP_FUTURE = "stamp_future"
STAMP_PAST = "stamp_past"
KINDS = (OUTSIDE_WORKSPACE, OUTSIDE_JOINT_RANGE, STAMP_FUTURE, STAMP_PAST)
AXES = ("x", "y", "z")


class PlausibilityError(ValueError):
    """A :class:`PlausibilityConfig` value is invalid: ``key`` (the field, e.g. ``workspace_upper[2]``),
    ``problem`` and ``value``; the cell config loader adds the file and the section."""

    def __init__(self, key: str, problem: str, value):
        super().__init__(f"{key}: {problem} (got {value!r})")
        self.key, self.problem, self.value = key, problem, value


@dataclass(frozen=True)
class HardwareRange:
    """The physical range of each joint of one group (rad, the group's joint order in the cell
    config): data sheet or URDF, never narrower than the training limits."""

    hardware_lower: tuple[float, ...]
    hardware_upper: tuple[float, ...]

    def __post_init__(self):
        if len(self.hardware_lower) != len(self.hardware_upper):
            raise PlausibilityError("hardware_upper", f"expected {len(self.hardware_lower)} entries like "
                                    "hardware_lower", list(self.hardware_upper))
        for i, (lo, hi) in enumerate(zip(self.hardware_lower, self.hardware_upper)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise PlausibilityError(f"hardware_lower[{i}]", f"must be finite and below hardware_upper[{i}] = {hi!r} rad",
                                        lo)


@dataclass(frozen=True)
class SideRanges:
    arm: HardwareRange
    hand: HardwareRange


@dataclass(frozen=True)
class JointRanges:
    thrower: SideRanges
    catcher: SideRanges


@dataclass(frozen=True)
class PlausibilityConfig:
    """The ``plausibility:`` section of the cell config.

    ``workspace_lower``/``workspace_upper``: the box (world frame, m, x y z) that holds every place
    the object can physically be in the cell (generous: the whole cell, floor to above the arms'
    reach); ``joint_margin``: rad a joint reading may lie beyond its hardware range (>= 0);
    ``stamp_future_s``/``stamp_past_s``: how far (s, > 0) a stamp may lie after / before the
    receiving node's clock; ``joint_ranges``: each joint group's :class:`HardwareRange`.
    Construction validates (:class:`PlausibilityError`)."""

    workspace_lower: tuple[float, ...] = field(metadata={"length": 3})
    workspace_upper: tuple[float, ...] = field(metadata={"length": 3})
    joint_margin: float
    stamp_future_s: float = field(metadata={"positive": True})
    stamp_past_s: float = field(metadata={"positive": True})
    joint_ranges: JointRanges

    def hardware_range(self, side: str, group: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(hardware_lower, hardware_upper)`` of one group (rad), e.g. ``("catcher", "arm")``."""
        r = getattr(getattr(self.joint_ranges, side), group)
        return r.hardware_lower, r.hardware_upper

    def __post_init__(self):
        for name in ("workspace_lower", "workspace_upper"):
            v = getattr(self, name)
            if len(v) != 3:
                raise PlausibilityError(name, "expected 3 entries (x, y, z)", list(v))
            for i, c in enumerate(v):
                if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                    raise PlausibilityError(f"{name}[{i}]", "expected a finite number (m)", c)
        for i, (lo, hi) in enumerate(zip(self.workspace_lower, self.workspace_upper)):
            if not lo < hi:
                raise PlausibilityError(f"workspace_lower[{i}]",
                                        f"must be below workspace_upper[{i}] = {hi!r} ({AXES[i]}, m)", lo)
        if not (math.isfinite(self.joint_margin) and self.joint_margin >= 0):
            raise PlausibilityError("joint_margin", "must be a finite number >= 0 rad", self.joint_margin)
        for name in ("stamp_future_s", "stamp_past_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise PlausibilityError(name, "must be a finite number > 0 s", v)

    def contains(self, xyz) -> bool:
        """Is the point (world, m) inside the workspace box (bounds included)?"""
        a = np.asarray(xyz, dtype=float)
        return bool(np.all(a >= self.workspace_lower) and np.all(a <= self.workspace_upper))


@dataclass(frozen=True)
class Implausible:
    """Why an input is not physically plausible: ``kind`` (one of :data:`KINDS`) and ``detail``
    (one sentence naming the source, the value and the bound)."""

    kind: str
    detail: str


def object_problem(xyz, cfg: PlausibilityConfig, source: str) -> Optional[Implausible]:
    """An object position (world frame, m, finite) outside the workspace box, or None.
    ``source``: where it came from (the topic), for the message."""
    a = np.asarray(xyz, dtype=float).ravel()
    if a.shape != (3,):
        raise ValueError(f"object_problem: {source}: expected a point (x, y, z), got shape {a.shape}")
    for i in range(3):
        lo, hi = cfg.workspace_lower[i], cfg.workspace_upper[i]
        if not lo <= a[i] <= hi:
            return Implausible(OUTSIDE_WORKSPACE,
                               f"{source}: object {AXES[i]} = {a[i]:.6g} m is outside the cell's workspace "
                               f"[{lo:g}, {hi:g}] m (world frame, plausibility.workspace_lower/upper)")
    return None


def joint_problem(names: Sequence[str], positions, hardware_lower: Sequence[float], hardware_upper: Sequence[float],
                  margin: float, source: str) -> Optional[Implausible]:
    """The first joint position (rad, finite) more than ``margin`` rad beyond its hardware range
    ``[hardware_lower, hardware_upper]``, or None. All sequences in the same joint order."""
    q = np.asarray(positions, dtype=float).ravel()
    lo = np.asarray(hardware_lower, dtype=float) - margin
    hi = np.asarray(hardware_upper, dtype=float) + margin
    if not (q.shape == lo.shape == hi.shape and len(names) == q.size):
        raise ValueError(f"joint_problem: {source}: {len(names)} names, {q.size} positions, "
                         f"{lo.size} lower and {hi.size} upper bounds")
    bad = np.flatnonzero((q < lo) | (q > hi))
    if bad.size == 0:
        return None
    i = int(bad[0])
    return Implausible(OUTSIDE_JOINT_RANGE,
                       f"{source}: joint {names[i]} position {q[i]:.6g} rad is more than {margin:g} rad outside its "
                       f"hardware range [{hardware_lower[i]:g}, {hardware_upper[i]:g}] rad"
                       + (f" ({bad.size} joints out)" if bad.size > 1 else ""))


def stamp_problem(stamp_s: float, now_s: Optional[float], cfg: PlausibilityConfig, source: str) -> Optional[Implausible]:
    """A message stamp (s) too far after or before ``now_s`` (the receiving node's clock, s), or
    None. ``now_s`` None: the clock has no time yet (sim time before ``/clock``): not judged."""
    if now_s is None:
        return None
    ahead = stamp_s - now_s
    if not math.isfinite(ahead):
        return Implausible(STAMP_FUTURE if ahead > 0 else STAMP_PAST, f"{source}: stamp {stamp_s!r} s is not finite")
    if ahead > cfg.stamp_future_s:
        return Implausible(STAMP_FUTURE, f"{source}: stamp {stamp_s:.3f} s is {ahead:.3f} s in the future of this "
                                         f"node's clock ({now_s:.3f} s; limit plausibility.stamp_future_s = "
                                         f"{cfg.stamp_future_s:g} s)")
    if -ahead > cfg.stamp_past_s:
        return Implausible(STAMP_PAST, f"{source}: stamp {stamp_s:.3f} s is {-ahead:.3f} s in the past of this "
                                       f"node's clock ({now_s:.3f} s; limit plausibility.stamp_past_s = "
                                       f"{cfg.stamp_past_s:g} s)")
    return None


class RejectionLog:
    """Counts of rejected (implausible) inputs per topic and kind, the last reason per topic, and
    when to log: the first rejection of a (topic, kind), then at most once per ``log_period_s``
    (s, the caller's clock, e.g. ``time.monotonic``). Not thread safe: the caller holds its lock.

    :attr:`counts` ``{(topic, kind): n}``; :attr:`last` ``{topic: detail}``."""

    def __init__(self, log_period_s: float = 5.0):
        if not (math.isfinite(log_period_s) and log_period_s >= 0):
            raise ValueError(f"RejectionLog: log_period_s must be >= 0 s, got {log_period_s!r}")
        self.log_period_s = float(log_period_s)
        self.counts: dict[tuple[str, str], int] = {}
        self.last: dict[str, str] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (time, count) of its last log line

    def add(self, topic: str, found: Implausible, now_s: float) -> Optional[str]:
        """Count one rejected message; returns the line to log now, or None (throttled)."""
        key = (topic, found.kind)
        n = self.counts[key] = self.counts.get(key, 0) + 1
        self.last[topic] = found.detail
        logged = self._logged.get(key)
        if logged is not None and now_s - logged[0] < self.log_period_s:
            return None
        self._logged[key] = (now_s, n)
        since = "" if logged is None else f"; {n - logged[1]} such since the last report"
        return (f"ignoring an implausible message ({found.kind}): {found.detail} [{n} on {topic} so far{since}; "
                f"reported at most every {self.log_period_s:g} s]")

    def total(self) -> int:
        return sum(self.counts.values())

    def values(self) -> dict:
        """For ``/diagnostics``: ``implausible_inputs`` (total), ``implausible <kind> <topic>`` (count) per
        pair seen, and ``implausible last <topic>`` (the last reason)."""
        out: dict = {"implausible_inputs": self.total()}
        out.update({f"implausible {kind} {topic}": n for (topic, kind), n in sorted(self.counts.items())})
        out.update({f"implausible last {topic}": d for topic, d in sorted(self.last.items())})
        return out
