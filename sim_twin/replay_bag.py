"""``handover replay BAG``: a recorded run (:mod:`handover.runtime.recorder`) in the twin, and where they part.

Times: ``--start/--end`` are seconds from the first joint state of the bag (its header stamp);
everything is aligned on the messages' header stamps (node clock, s). Joint values in contract order
(rad), points in the world frame (m).

- ``--mode open`` (default): the recorded joint commands drive the twin
  (:func:`handover.sim_twin.open_loop.rollout`, the rollout the gain calibration fits). The run is
  sampled on the twin's physics step from the joint state at or before the window's start
  (:meth:`~handover.runtime.recorded_run.RecordedRun.sampled`): the twin starts from the 44 joint
  positions and velocities there; each period's targets are the newest recorded command stamped at
  or before the period's start (so a command acts from the first physics step at or after its stamp,
  as in the twin node); the twin runs with its calibrated gains
  (``<devices.calibration_dir>/twin_pd_gains.yaml`` if present). The object is set from the
  recorded observations (position and velocity fitted around the stamp:
  :func:`~handover.runtime.recorded_run.object_state_at`) at the window's start, where the recorded
  object jumps (the twin node's placement service teleports it) and at each recorded episode's first
  policy step (an operator placed it before), and moves freely in the twin in between: the object
  path error is the twin's object against the recorded observations. Joint errors compare the twin
  with the joint states where they were measured (at the nearest physics step, moved there along
  their measured velocity; never interpolated between measurements).
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
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from handover.runtime.errors import InputError
from handover.runtime.recorded_run import OBJECT_FIT_AFTER_S, RecordedRun, hold, interp_rows, load_run, object_state_at

MODES = ("open", "closed")


def _errors(diff: np.ndarray, names) -> dict:
    """Per-column RMSE and max |diff| (NaN rows ignored), and the overall figures."""
    d = np.abs(diff)
    rmse = np.sqrt(np.nanmean(d ** 2, axis=0))
    mx = np.nanmax(d, axis=0)
    return {"rmse": float(np.sqrt(np.nanmean(d ** 2))), "max": float(np.nanmax(d)),
            "per_joint": {n: {"rmse": float(r), "max": float(m)} for n, r, m in zip(names, rmse, mx)}}


def replay_open(run: RecordedRun, cfg, t_start: float, t_end: float, twin=None) -> dict:
    """The open-loop replay over ``[t_start, t_end]`` (stamps, s): series and errors (module docstring)."""
    from handover.sim_twin.open_loop import rollout
    from handover.sim_twin.twin import Twin

    twin = twin or Twin(cfg)
    dt = cfg.twin.timestep_s  # each command from the first physics step at or after its stamp, as in the twin node
    s = run.sampled(dt, t_start, t_end)
    gravity = twin.model.opt.gravity.copy()
    placed = {}
    times = sorted(t for t in [*run.episode_starts(), *run.object_jumps()] if s.ticks[0] < t < s.ticks[-1])
    for t, later in zip([s.ticks[0], *times], [*times, np.inf]):
        if t > s.ticks[0] and later - t < OBJECT_FIT_AFTER_S:  # one placement seen twice (an episode starts
            continue  # as it is placed): the later
        k = int(np.floor((t - s.ticks[0]) / dt + 1e-6))  # the tick at or before: the jump's frame sees the placed object
        state = object_state_at(run.obj_t, run.obj, float(s.ticks[k]), gravity)
        if state is not None:
            placed[k] = state
    placed.setdefault(0, (np.asarray(cfg.object.start_position, dtype=float), np.zeros(3)))
    twin.reset(object_start=placed[0][0])
    def progress(k, steps):
        print(f"replay: {k * dt:.1f} of {steps * dt:.1f} s", file=sys.stderr, flush=True)

    q_twin, o_twin = rollout(twin, np.arange(len(run.joint_names)), s.positions[0], s.velocities[0], s.commands, dt, placed,
                             progress)
    joint = _errors(q_twin[1:] - s.positions[1:], run.joint_names)
    obj_ok = np.isfinite(run.obj).all(axis=1)
    osel = obj_ok & (run.obj_t > s.ticks[0]) & (run.obj_t <= s.ticks[-1])
    o_at = interp_rows(s.ticks, o_twin, run.obj_t[osel])
    for k in placed.keys() - {0}:  # not across a placement: hold the period before it
        before = (run.obj_t[osel] > s.ticks[k - 1]) & (run.obj_t[osel] < s.ticks[k])
        o_at[before] = o_twin[k - 1]
    o_err = np.linalg.norm(o_at - run.obj[osel], axis=1)
    obj_report = ({"rmse": float(np.sqrt(np.mean(o_err ** 2))), "max": float(o_err.max()), "samples": int(osel.sum())}
                  if osel.any() else {"rmse": None, "max": None, "samples": 0})
    obj_report["placements"] = len(placed)
    rsel = (run.requested_t >= s.ticks[0]) & (run.requested_t <= s.ticks[-1])
    gate = _errors(run.requested[rsel] - hold(run.cmd_t, run.cmd, run.requested_t[rsel]), run.joint_names) if rsel.any() else {}
    measured = np.isfinite(s.positions[1:]).all(axis=1)
    return {"joint_tracking": joint, "object_path": obj_report,
            "gate_difference": {"note": "the recorded commands minus what the drivers' command gate sent "
                                        "(the twin is driven by the latter)", "commands": int(rsel.sum()), **gate},
            "_series": {"t": s.ticks[1:][measured] - run.t0, "q_rec": s.positions[1:][measured],
                        "q_twin": q_twin[1:][measured],
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
    span = run.span_s
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
    for key in ("joint_tracking", "object_path", "gate_difference", "command_difference", "predicted_goal_difference"):
        v = rep.get(key, {})
        if v.get("rmse") is not None:
            print(f"{key}: RMSE {v['rmse']:.4g}, max {v['max']:.4g}")
    for key, v in rep.get("vs_baseline", {}).items():
        print(f"vs baseline {key}: {v['before']:.4g} -> {v['after']:.4g} ({v['change_percent']:+.1f} %)")
    print(f"replay: report in {rep['out']}")
    return 0
