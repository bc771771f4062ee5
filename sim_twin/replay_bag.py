"""``handover replay BAG``: a recorded run (:mod:`handover.runtime.recorder`) in the twin, and where they part.

Times: ``--start/--end`` are seconds from the first joint state of the bag (its header stamp);
everything is aligned on the messages' header stamps (node clock, s). Joint values in contract order
(rad), points in the world frame (m).

- ``--mode open`` (default): the recorded joint commands drive the twin. The twin starts from the
  recorded state at the window's start (the 44 joint positions and velocities of the joint states
  nearest before it, PD targets = the last command before it, or the positions). The object starts
  at its recorded position at the window's start (at rest if it did not move over the first
  0.1 s, else with the velocity of the recorded path there) and then moves freely in the twin: the
  object path error is the twin's object against the recorded observations. Each control period
  the targets are the newest recorded command stamped at or before the period's start.
- ``--mode closed``: the recorded policy steps (``/handover/policy/step``: the inputs each step was
  given: joint positions, object observation, goal, efforts) through a bundle (``--bundle``, default
  the config's), its targets and predicted goals compared with the recorded ones. Steps are run in
  order in one controller, reset at each episode's first step, as the node does (the contract's
  frame stack survives a reset: a window that starts mid-run misses the frames before it). Needs a
  bag with the step topic.

The report (``--out DIR``, default ``BAG_replay_<mode>``, written atomically as a whole folder):
``divergence.json`` (per-joint RMSE and max, rad; object path error, m; command difference, rad)
and PNG plots. ``--baseline REPORT.json`` (a previous report of the same bag and mode, e.g. before
a calibration) adds how much each error changed (``vs_baseline``) and prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from handover.runtime.errors import InputError

MODES = ("open", "closed")


@dataclass
class RecordedRun:
    """A bag's signals as arrays (stamps s, node clock; contract order)."""

    joint_names: list
    js_t: np.ndarray  # (N,)
    js_q: np.ndarray  # (N, 44) rad
    js_v: np.ndarray  # (N, 44) rad/s (zeros where not measured)
    cmd_t: np.ndarray  # (M,)
    cmd: np.ndarray  # (M, 44) rad
    obj_t: np.ndarray  # (K,)
    obj: np.ndarray  # (K, 3) m, NaN where not found
    steps: list = field(default_factory=list)  # PolicyStepRecord
    complete: bool = True
    t0: float = 0.0  # the bag's first joint state stamp (s): --start/--end count from it


def _stamp(msg) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def _group_series(msgs, names, topic):
    t, q, v = [], [], []
    for m in msgs:
        idx = {n: i for i, n in enumerate(m.msg.name)}
        if any(n not in idx for n in names):
            raise InputError(f"{topic}: a message lacks joints of the cell config (got {list(m.msg.name)[:3]}...)")
        t.append(_stamp(m.msg))
        q.append([m.msg.position[idx[n]] for n in names])
        v.append([m.msg.velocity[idx[n]] for n in names] if len(m.msg.velocity) == len(m.msg.name) else [0.0] * len(names))
    order = np.argsort(t, kind="stable")
    return np.asarray(t)[order], np.asarray(q, dtype=float)[order], np.asarray(v, dtype=float)[order]


def _hold(t_src, x_src, t):
    """Zero-order hold of ``x_src`` (rows at ``t_src``) at times ``t`` (the first row before the first stamp)."""
    i = np.clip(np.searchsorted(t_src, t, side="right") - 1, 0, len(t_src) - 1)
    return x_src[i]


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
    base_t = states[0][0]  # the thrower arm's stamps: the joint states' time base
    js_q = np.concatenate([_hold(t, q, base_t) for t, q, _ in states], axis=1)
    js_v = np.concatenate([_hold(t, v, base_t) for t, _, v in states], axis=1)
    cmd_t = np.unique(np.concatenate([c[0] for c in cmds]))
    cmd = np.concatenate([_hold(t, q, cmd_t) for t, q, _ in cmds], axis=1)
    obj_msgs = by_topic.get(topics.object_position, [])
    obj_t = np.array([_stamp(m.msg) for m in obj_msgs], dtype=float)
    obj = np.array([[m.msg.point.x, m.msg.point.y, m.msg.point.z] for m in obj_msgs], dtype=float).reshape(-1, 3)
    steps = [parse_step(m.msg.name, m.msg.position, _stamp(m.msg), m.msg.header.frame_id, names)
             for m in by_topic.get(POLICY_STEP_TOPIC, [])]
    return RecordedRun(names, base_t, js_q, js_v, cmd_t, cmd, obj_t, obj, steps, bag.complete, float(base_t[0]))


def _errors(diff: np.ndarray, names) -> dict:
    """Per-column RMSE and max |diff| (NaN rows ignored), and the overall figures."""
    d = np.abs(diff)
    rmse = np.sqrt(np.nanmean(d ** 2, axis=0))
    mx = np.nanmax(d, axis=0)
    return {"rmse": float(np.sqrt(np.nanmean(d ** 2))), "max": float(np.nanmax(d)),
            "per_joint": {n: {"rmse": float(r), "max": float(m)} for n, r, m in zip(names, rmse, mx)}}


def replay_open(run: RecordedRun, cfg, t_start: float, t_end: float, twin=None) -> dict:
    """The open-loop replay over ``[t_start, t_end]`` (stamps, s): series and errors (module docstring)."""
    from handover.sim_twin.twin import Twin

    twin = twin or Twin(cfg)
    dt = cfg.control_period_s
    i0 = max(int(np.searchsorted(run.js_t, t_start, side="right")) - 1, 0)
    ts = run.js_t[i0]
    obj_ok = np.isfinite(run.obj).all(axis=1)
    ot, op = run.obj_t[obj_ok], run.obj[obj_ok]
    start_obj = _hold(ot, op, np.array([ts]))[0] if len(ot) else np.asarray(cfg.object.start_position, dtype=float)
    twin.reset(object_start=start_obj)
    near = (ot >= ts) & (ot <= ts + 0.1)
    if near.sum() >= 2 and np.linalg.norm(op[near][-1] - op[near][0]) > 1e-3:
        vel = (op[near][-1] - op[near][0]) / (ot[near][-1] - ot[near][0])
        twin.set_object_state(start_obj, vel)
    import mujoco

    d = twin.data
    d.qpos[twin.qpos_adr] = run.js_q[i0]
    d.qvel[twin.dof_adr] = run.js_v[i0]
    before = run.cmd_t <= ts
    d.ctrl[twin.actuator_ids] = run.cmd[before][-1] if before.any() else run.js_q[i0]
    mujoco.mj_forward(twin.model, d)
    index = np.arange(44)
    n = max(int(np.floor((t_end - ts) / dt + 1e-9)), 1)
    t_sim = ts + dt * np.arange(1, n + 1)
    q_twin, o_twin = np.empty((n, 44)), np.empty((n, 3))
    for k in range(n):
        tk = ts + k * dt
        due = run.cmd_t <= tk + 1e-9
        if due.any():
            twin.set_targets(index, run.cmd[np.flatnonzero(due)[-1]])
        twin.step()
        q_twin[k], o_twin[k] = twin.joint_positions(), twin.object_position()
    # compare at the recorded stamps inside the window
    sel = (run.js_t > ts) & (run.js_t <= t_sim[-1])
    q_at = np.stack([np.interp(run.js_t[sel], t_sim, q_twin[:, j]) for j in range(44)], axis=1) if sel.any() else np.zeros((0, 44))
    if not sel.any():
        raise InputError(f"the window {t_start - run.t0:.3f}..{t_end - run.t0:.3f} s holds no joint states to compare")
    joint = _errors(q_at - run.js_q[sel], run.joint_names)
    osel = obj_ok & (run.obj_t > ts) & (run.obj_t <= t_sim[-1])
    o_at = np.stack([np.interp(run.obj_t[osel], t_sim, o_twin[:, a]) for a in range(3)], axis=1)
    o_err = np.linalg.norm(o_at - run.obj[osel], axis=1)
    obj_report = ({"rmse": float(np.sqrt(np.mean(o_err ** 2))), "max": float(o_err.max()), "samples": int(osel.sum())}
                  if osel.any() else {"rmse": None, "max": None, "samples": 0})
    csel = (run.cmd_t >= ts) & (run.cmd_t <= t_sim[-1])
    return {"joint_tracking": joint, "object_path": obj_report,
            "command_difference": {"note": "open loop: the twin is driven by the recorded commands (difference 0)",
                                   "commands": int(csel.sum())},
            "_series": {"t": run.js_t[sel] - run.t0, "q_rec": run.js_q[sel], "q_twin": q_at,
                        "ot": run.obj_t[osel] - run.t0, "o_rec": run.obj[osel], "o_twin": o_at}}


def replay_closed(run: RecordedRun, cfg, bundle, t_start: float, t_end: float) -> dict:
    """The closed-loop replay of the recorded policy steps in ``[t_start, t_end]`` through ``bundle``."""
    from handover.drivers.object_tracker import ObjectObservation
    from handover.runtime.contract import ContractSpec
    from handover.runtime.policy_controller import PolicyController
    from handover.runtime.policy_networks import PolicyNetworks

    steps = [s for s in run.steps if t_start <= s.stamp <= t_end]
    if not steps:
        raise InputError(f"closed loop needs the policy steps (/handover/policy/step) in the window; the bag has "
                         f"{len(run.steps)} in all (recorded before the policy node published them?)")
    spec = ContractSpec.from_config(cfg)
    ctrl = PolicyController(spec, PolicyNetworks.load(bundle), cfg.goal.center, cfg.object.start_position)
    out, goal_out, token = [], [], None
    for s in steps:
        if s.token != token or s.step == 0:
            ctrl.set_goal(s.goal)
            ctrl.reset()
            token = s.token
        obs = ObjectObservation(stamp=s.stamp, valid=s.obj_valid, position=s.obj.copy() if s.obj_valid else None)
        out.append(ctrl.targets(s.stamp, s.q, obs, s.efforts))
        goal_out.append(np.asarray(ctrl.last_result.predicted_goal_world, dtype=float).ravel())
    out, rec = np.asarray(out, dtype=float), np.stack([s.targets for s in steps])
    g_out, g_rec = np.asarray(goal_out), np.stack([s.predicted_goal for s in steps])
    cmd = _errors(out - rec, run.joint_names)
    cmd["steps"] = len(steps)
    ge = np.linalg.norm(g_out - g_rec, axis=1)
    t = np.array([s.stamp for s in steps]) - run.t0
    return {"command_difference": cmd, "predicted_goal_difference": {"rmse": float(np.sqrt(np.mean(ge ** 2))),
                                                                      "max": float(ge.max())},
            "_series": {"t": t, "q_rec": rec, "q_twin": out}}


def _plots(folder: Path, series: dict, names, mode: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    t, a, b = series["t"], series["q_rec"], series["q_twin"]
    label = "twin" if mode == "open" else "bundle"
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    for g, ax in enumerate(axes):  # one panel per joint group (contract order: arm 6 + hand 16 per side)
        lo, hi = [(0, 6), (6, 22), (22, 28), (28, 44)][g]
        for j in range(lo, hi):
            ax.plot(t, b[:, j] - a[:, j], lw=0.8)
        ax.set_ylabel(f"{label} - recorded\n{names[lo].split('/')[0]} {'arm' if hi - lo == 6 else 'hand'} (rad)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time from the bag's start (s)")
    fig.suptitle(f"{mode} loop: {'joint tracking error' if mode == 'open' else 'command difference'} per joint")
    fig.tight_layout()
    fig.savefig(folder / "joints.png", dpi=80)
    plt.close(fig)
    written.append("joints.png")
    if mode == "open" and len(series["ot"]):
        fig, ax = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        for i, c in enumerate("xyz"):
            ax[0].plot(series["ot"], series["o_rec"][:, i], f"C{i}-", lw=1, label=f"recorded {c}")
            ax[0].plot(series["ot"], series["o_twin"][:, i], f"C{i}--", lw=1, label=f"twin {c}")
        ax[0].set_ylabel("object (m, world)")
        ax[0].legend(ncol=3, fontsize=7)
        ax[1].plot(series["ot"], 1e3 * np.linalg.norm(series["o_twin"] - series["o_rec"], axis=1))
        ax[1].set_ylabel("path error (mm)")
        ax[1].set_xlabel("time from the bag's start (s)")
        fig.tight_layout()
        fig.savefig(folder / "object.png", dpi=80)
        plt.close(fig)
        written.append("object.png")
    return written


def _vs_baseline(report: dict, baseline: dict) -> dict:
    """Relative change of each headline error against a previous report (negative: smaller now)."""
    out = {}
    for key in ("joint_tracking", "object_path", "command_difference"):
        for stat in ("rmse", "max"):
            new, old = report.get(key, {}).get(stat), baseline.get(key, {}).get(stat)
            if isinstance(new, float) and isinstance(old, (int, float)) and old:
                out[f"{key}.{stat}"] = {"before": old, "after": new, "change_percent": 100.0 * (new - old) / old}
    return out


def replay(bag, cfg, mode: str = "open", start: Optional[float] = None, end: Optional[float] = None,
           bundle=None, out=None, baseline=None) -> dict:
    """Replay ``bag`` (see the module docstring); writes the report folder ``out``; returns the report."""
    from handover.runtime.files import atomic_folder, input_file, output_folder

    if mode not in MODES:
        raise InputError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    base = json.loads(input_file(baseline, "baseline report").read_text()) if baseline else None
    out = output_folder(out or Path(f"{Path(bag).with_suffix('')}_replay_{mode}"), "replay report", inputs=[bag])
    run = load_run(bag, cfg)
    span = float(run.js_t[-1] - run.t0)
    s = 0.0 if start is None else float(start)
    e = span if end is None else float(end)
    if not 0.0 <= s < e:
        raise InputError(f"--start {s:g} --end {e:g}: need 0 <= start < end (the bag covers 0..{span:.3f} s)")
    if s >= span:
        raise InputError(f"--start {s:g}: after the bag's end ({span:.3f} s)")
    e = min(e, span)
    if mode == "open":
        rep = replay_open(run, cfg, run.t0 + s, run.t0 + e)
    else:
        rep = replay_closed(run, cfg, bundle or cfg.models.bundle, run.t0 + s, run.t0 + e)
    series = rep.pop("_series")
    rep = {"bag": str(bag), "mode": mode, "window_s": [s, e], "bag_complete": run.complete, **rep}
    if base is not None:
        rep["vs_baseline"] = _vs_baseline(rep, base)
    with atomic_folder(out) as tmp:
        rep["plots"] = _plots(tmp, series, run.joint_names, mode)
        (tmp / "divergence.json").write_text(json.dumps(rep, indent=2))
    rep["out"] = str(out)
    return rep


def add_parser(sub) -> None:
    from handover.runtime.cell_config import DEFAULT_CONFIG_PATH

    p = sub.add_parser("replay", help="replay a recorded bag in the twin and report the divergence",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="the bag folder (or its .mcap file)")
    p.add_argument("--start", type=float, default=None, metavar="S", help="window start, s from the bag's first joint state")
    p.add_argument("--end", type=float, default=None, metavar="S", help="window end, s from the bag's first joint state")
    p.add_argument("--mode", choices=MODES, default="open", help="open: recorded commands drive the twin; "
                   "closed: recorded policy inputs through --bundle (default: %(default)s)")
    p.add_argument("--bundle", type=Path, default=None, help="policy bundle for --mode closed (default: the config's)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="cell config (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: BAG_replay_MODE)")
    p.add_argument("--baseline", type=Path, default=None, metavar="JSON",
                   help="a previous divergence.json of this bag (e.g. before a calibration): report the change")
    p.set_defaults(func=run)


def run(args) -> int:
    from handover.runtime.cell_config import load_cell_config

    rep = replay(args.bag, load_cell_config(args.config), args.mode, args.start, args.end, args.bundle, args.out,
                 args.baseline)
    if not rep["bag_complete"]:
        print(f"replay: {args.bag}: the recording did not close (crash?): replayed what was flushed", flush=True)
    for key in ("joint_tracking", "object_path", "command_difference", "predicted_goal_difference"):
        v = rep.get(key, {})
        if v.get("rmse") is not None:
            print(f"{key}: RMSE {v['rmse']:.4g}, max {v['max']:.4g}")
    for key, v in rep.get("vs_baseline", {}).items():
        print(f"vs baseline {key}: {v['before']:.4g} -> {v['after']:.4g} ({v['change_percent']:+.1f} %)")
    print(f"replay: report in {rep['out']}")
    return 0
