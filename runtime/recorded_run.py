"""A recorded bag (:mod:`handover.runtime.recorder`) as arrays: what the replay and the calibrations read.

Times are the messages' header stamps (s, node clock: wall clock, or simulation time under
``use_sim_time``); joint values in contract order (rad); points in the world frame (m).

- :func:`load_run`: the four joint-state topics held on the thrower arm's stamps (the joint
  states' time base); the four joint-command topics as their drivers sent them (through the command
  gate: :func:`sent_commands`) held on the union of their stamps, and as recorded; the object
  observations; the policy steps (``/handover/policy/step``).
- :meth:`RecordedRun.sampled`: the run on a grid of ticks (the twin's physics step) from a start
  stamp: per tick the newest command stamped at or before it (before the first: the measured
  positions there, a hold) and the joint states measured nearest to it, moved to the tick along their
  measured velocity (NaN at ticks no joint state is nearest to: nothing is interpolated between
  measurements). This is how the open-loop replay and the gain calibration drive the twin and
  compare with the cell, so both see the same run.
- :func:`object_state_at`: the object's position and velocity at a stamp fitted to the observations
  around it (camera frames are noisy and the object may be falling: a finite difference of two
  frames is not its velocity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from handover.runtime.command_gate import GateLimits, gate_command, hold_state, staleness
from handover.runtime.errors import InputError

# Observations used by object_state_at: from this long before the stamp to this long after it (s)
OBJECT_FIT_BEFORE_S = 0.1
OBJECT_FIT_AFTER_S = 0.1
# Consecutive observations further apart than this speed allows (m/s; a throw of this cell is a few m/s)
# are two motions: the object was placed (the twin node's service teleports it) or the tracker jumped
OBJECT_JUMP_SPEED_M_S = 8.0
STAMP_TOLERANCE_S = 1e-6  # a command stamped this close after a tick counts as sent at it (ns stamps, float ticks)


@dataclass
class RecordedRun:
    """A bag's signals as arrays (stamps s, node clock; contract order)."""

    joint_names: list
    js_t: np.ndarray  # (N,)
    js_q: np.ndarray  # (N, 44) rad
    js_v: np.ndarray  # (N, 44) rad/s (zeros where not measured)
    cmd_t: np.ndarray  # (M,)
    cmd: np.ndarray  # (M, 44) rad, what the drivers sent: the recorded commands through the gate (sent_commands)
    obj_t: np.ndarray  # (K,)
    obj: np.ndarray  # (K, 3) m, NaN where not found
    steps: list = field(default_factory=list)  # PolicyStepRecord
    complete: bool = True
    t0: float = 0.0  # the bag's first joint state stamp (s): windows count from it
    requested_t: Optional[np.ndarray] = None  # (R,) the commands as recorded (before the gate)
    requested: Optional[np.ndarray] = None  # (R, 44) rad

    @property
    def span_s(self) -> float:
        """Seconds of joint states from ``t0``."""
        return float(self.js_t[-1] - self.t0)

    def sampled(self, period_s: float, t_start: float, t_end: float) -> "SampledRun":
        """The run on ticks ``ts + k * period_s`` (k = 0..T, ``ts`` the last joint-state stamp at or
        before ``t_start``) up to ``t_end`` (module docstring). InputError if that is under 2 ticks."""
        i0 = max(int(np.searchsorted(self.js_t, t_start, side="right")) - 1, 0)
        ts = float(self.js_t[i0])
        steps = int(np.floor((min(t_end, float(self.js_t[-1])) - ts) / period_s + 1e-9))
        if steps < 2:
            raise InputError(f"the window {t_start - self.t0:.3f}..{t_end - self.t0:.3f} s holds under two periods "
                             f"({period_s:g} s) of joint states")
        ticks = ts + period_s * np.arange(steps + 1)
        q = np.full((steps + 1, self.js_q.shape[1]), np.nan)
        v = np.full_like(q, np.nan)
        k = np.rint((self.js_t - ts) / period_s).astype(int)
        inside = np.flatnonzero((k >= 0) & (k <= steps))
        off = ticks[k[inside]] - self.js_t[inside]
        order = np.argsort(-np.abs(off), kind="stable")  # the nearest sample of a tick written last
        inside, off = inside[order], off[order]
        q[k[inside]] = self.js_q[inside] + self.js_v[inside] * off[:, None]
        v[k[inside]] = self.js_v[inside]
        q[0], v[0] = self.js_q[i0], self.js_v[i0]
        due = np.searchsorted(self.cmd_t, ticks[:-1] + STAMP_TOLERANCE_S, side="right") - 1
        commands = np.where((due >= 0)[:, None], self.cmd[np.maximum(due, 0)], q[0])
        return SampledRun(ticks, commands, q, v)

    def object_jumps(self) -> np.ndarray:
        """Stamps (s) of the first observation after each jump of the object (two valid observations
        further apart than OBJECT_JUMP_SPEED_M_S allows: it was placed)."""
        ok = np.isfinite(self.obj).all(axis=1)
        t, p = self.obj_t[ok], self.obj[ok]
        return t[1:][_jumps(t, p)]

    def episode_starts(self) -> np.ndarray:
        """Stamps (s) of the recorded episodes' first policy steps (step 0), in order."""
        return np.array(sorted(s.stamp for s in self.steps if s.step == 0), dtype=float)


@dataclass
class SampledRun:
    """A run on ticks: ``ticks`` (T+1,) s; ``commands`` (T, J) rad, sent at ticks[k];
    ``positions`` and ``velocities`` (T+1, J) rad, rad/s, measured at ticks[k] (NaN: not measured)."""

    ticks: np.ndarray
    commands: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray


def stamp_s(msg) -> float:
    """A message's header stamp, s."""
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def hold(t_src: np.ndarray, x_src: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Zero-order hold of ``x_src`` (rows at ``t_src``) at times ``t`` (the first row before the first stamp)."""
    i = np.clip(np.searchsorted(t_src, t, side="right") - 1, 0, len(t_src) - 1)
    return x_src[i]


def interp_rows(t_src: np.ndarray, x_src: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of every column of ``x_src`` (rows at ``t_src``) at times ``t``."""
    return np.stack([np.interp(t, t_src, x_src[:, j]) for j in range(x_src.shape[1])], axis=1)


def object_state_at(obj_t: np.ndarray, obj: np.ndarray, t: float, gravity: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(position m, velocity m/s) of the object at stamp ``t`` from its valid observations within
    [t - OBJECT_FIT_BEFORE_S, t + OBJECT_FIT_AFTER_S] of the motion the stamp starts in (not across a
    jump faster than OBJECT_JUMP_SPEED_M_S: a placement): least squares of two motions, moving at a
    constant velocity (held, resting, pushed) or falling freely under ``gravity`` (m/s^2, world),
    whichever fits better; with fewer than three observations, at rest at the nearest. None if none."""
    valid = np.flatnonzero(np.isfinite(obj).all(axis=1))
    if not len(valid):
        return None
    vt, vp = obj_t[valid], obj[valid]
    segment = np.concatenate([[0], np.cumsum(_jumps(vt, vp))])
    after = np.flatnonzero(vt >= t)
    own = segment[after[0]] if len(after) else segment[-1]  # the motion the stamp starts (or ends) in
    ok = (segment == own) & (vt >= t - OBJECT_FIT_BEFORE_S) & (vt <= t + OBJECT_FIT_AFTER_S)
    if not ok.any():
        return None
    tau, p = vt[ok] - t, vp[ok]
    if len(tau) < 3:
        return p[np.argmin(np.abs(tau))].copy(), np.zeros(3)
    a = np.stack([np.ones_like(tau), tau], axis=1)
    best = None
    for g in (np.zeros(3), np.asarray(gravity, dtype=float)):
        y = p - 0.5 * tau[:, None] ** 2 * g
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        resid = float(np.sum((a @ coef - y) ** 2))
        if best is None or resid < best[0]:
            best = (resid, coef[0], coef[1])
    return best[1], best[2]


def sent_commands(limits: GateLimits, cmd_t: np.ndarray, cmd: np.ndarray, tokens, js_t: np.ndarray,
                  js_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a joint group's driver sent for its recorded commands: the command gate
    (:mod:`handover.runtime.command_gate`, as :class:`~handover.drivers.joint_group.JointGroup` runs
    it) replayed on them, the measured positions being the recorded joint states (the newest at or
    before each time). ``cmd_t`` (M,) s, ``cmd`` (M, n) rad requested, ``tokens`` (M,) their episode
    tokens; ``js_t``/``js_q`` the group's joint states. Returns the times (s) and targets (rad) sent:
    each accepted command (clamped to the limits, its change cut to ``max_step``), and a hold of the
    measured position where the driver held: at the first command of an episode (from where the
    joints are), when the stream went stale (at ``stale_s`` after the last command, as the driver's
    poll does) and for a refused command.
    Safety stops are not in it (a run with a stop replays the commands around it as if none came)."""
    def measured(t):
        return hold(js_t, js_q, np.array([t]))[0]

    out_t, out = [], []
    state = None

    def held(t, why):
        nonlocal state
        state = hold_state(measured(t), t, why)
        out_t.append(t)
        out.append(np.asarray(state.reference))

    token = None
    for t, c, tok in zip(cmd_t, cmd, tokens):
        t = float(t)
        if state is None or tok != token:
            held(t, "first command of an episode")
            token = tok
        elif staleness(limits, state, t) is not None:
            held(min(state.since + limits.stale_s, t), "stale")
        decision, new = gate_command(limits, state, c, t)
        if decision.accepted:
            state = new
            out_t.append(t)
            out.append(np.asarray(decision.targets))
        elif decision.hold:
            held(t, decision.reason)
    if state is not None and staleness(limits, state, float(js_t[-1])) is not None:
        held(state.since + limits.stale_s, "stale")
    return np.asarray(out_t, dtype=float), np.asarray(out, dtype=float).reshape(len(out_t), -1)


def _jumps(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(K-1,) bool: observation i+1 is further from i than OBJECT_JUMP_SPEED_M_S allows."""
    return np.linalg.norm(np.diff(p, axis=0), axis=1) / np.maximum(np.diff(t), 1e-6) > OBJECT_JUMP_SPEED_M_S


def _group_series(msgs, names, topic):
    """(stamps, positions, velocities, frame ids) of a topic's JointState messages, by stamp."""
    t, q, v, f = [], [], [], []
    for m in msgs:
        idx = {n: i for i, n in enumerate(m.msg.name)}
        if any(n not in idx for n in names):
            raise InputError(f"{topic}: a message lacks joints of the cell config (got {list(m.msg.name)[:3]}...)")
        t.append(stamp_s(m.msg))
        q.append([m.msg.position[idx[n]] for n in names])
        v.append([m.msg.velocity[idx[n]] for n in names] if len(m.msg.velocity) == len(m.msg.name) else [0.0] * len(names))
        f.append(m.msg.header.frame_id)
    order = np.argsort(t, kind="stable")
    return (np.asarray(t)[order], np.asarray(q, dtype=float)[order], np.asarray(v, dtype=float)[order],
            [f[i] for i in order])


def load_run(bag_path, cfg) -> RecordedRun:
    """The recorded run of ``bag_path`` for cell config ``cfg`` (InputError if a topic is missing)."""
    from handover.runtime.bag_reader import read_bag
    from handover.runtime.ros_interface import GROUPS, SIDES, Topics, joint_names
    from handover.runtime.step_topic import POLICY_STEP_TOPIC, parse_step

    topics = Topics.from_config(cfg)
    bag = read_bag(bag_path)
    by_topic: dict = {}
    for m in bag.messages:
        by_topic.setdefault(m.topic, []).append(m)
    keys = [(s, g) for s in SIDES for g in GROUPS]
    names = [n for k in keys for n in joint_names(cfg, *k)]
    states, cmds = [], []
    for k in keys:
        for store, topic in ((states, topics.joint_states[k]), (cmds, topics.joint_commands[k])):
            if topic not in by_topic:
                raise InputError(f"{bag_path}: no messages on {topic} (a bag of this cell's topics? {len(bag.messages)} "
                                 f"messages read)")
            store.append(_group_series(by_topic[topic], joint_names(cfg, *k), topic))
    base_t = states[0][0]
    js_q = np.concatenate([hold(st[0], st[1], base_t) for st in states], axis=1)
    js_v = np.concatenate([hold(st[0], st[2], base_t) for st in states], axis=1)
    sent = [sent_commands(GateLimits.from_config(getattr(getattr(cfg, s), g), cfg.gate, cfg.control_period_s),
                          c[0], c[1], c[3], st[0], st[1]) for (s, g), c, st in zip(keys, cmds, states)]
    cmd_t = np.unique(np.concatenate([t for t, _ in sent]))
    cmd = np.concatenate([hold(t, q, cmd_t) for t, q in sent], axis=1)  # each group sent at least its first hold
    req_t = np.unique(np.concatenate([c[0] for c in cmds]))
    requested = np.concatenate([hold(c[0], c[1], req_t) for c in cmds], axis=1)
    obj_msgs = by_topic.get(topics.object_position, [])
    obj_t = np.array([stamp_s(m.msg) for m in obj_msgs], dtype=float)
    obj = np.array([[m.msg.point.x, m.msg.point.y, m.msg.point.z] for m in obj_msgs], dtype=float).reshape(-1, 3)
    order = np.argsort(obj_t, kind="stable")
    steps = [parse_step(m.msg.name, m.msg.position, stamp_s(m.msg), m.msg.header.frame_id, names)
             for m in by_topic.get(POLICY_STEP_TOPIC, [])]
    return RecordedRun(names, base_t, js_q, js_v, cmd_t, cmd, obj_t[order], obj[order], steps, bag.complete,
                       float(base_t[0]), req_t, requested)
