"""The MuJoCo twin side of the PD gain calibration (:mod:`handover.calibration.pd_gains` is pure and
gets the simulation injected; this module provides it, makes excitation recordings, and adds the
``handover calibrate gains`` subcommand).

- Gain factors are the twin's own (:class:`~handover.sim_twin.twin.Twin` ``gain_factors``, applied by
  its reset on the nominal gains, per joint group), as the twin loads the calibrated file.
- :class:`TwinReplay`: ``simulate(factors, recording) -> positions`` — resets the twin with the
  factors and runs the recording's commands from its first positions (velocities: its first row, or
  0) with :func:`handover.sim_twin.open_loop.rollout`, the bag replay's rollout. Joints that are not
  in the recording stay at the default pose. The object starts at ``object_start`` (default: the
  config's start; the calibration parks it out of reach).
- :func:`excitation_commands`: a calibration sequence of PD targets around the default pose: per
  joint, steps held 0.4-1.2 s to random targets (arm +-0.08 rad, hand +-0.04 rad, inside the limits).
  Small enough that the joints stay below their velocity limits: a joint held at its limit does not
  show its gains, and with +-0.15/0.1 rad steps (hand joints at 3 rad/s for a few steps) the search
  stalled 6-9 % off; with these amplitudes it recovers the factors to 0.1 %. Real excitation runs
  should keep the same rule (the calibration run's commands are yours to choose).
- :func:`record_twin`: drives a twin (with given gain factors) by a command sequence and returns the
  :class:`~handover.calibration.pd_gains.Recording` (the test's "reality").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from handover.calibration.commands import calibrate_subparsers
from handover.calibration.pd_gains import (GAINS_FILE, GainCalibrationError, GainFactors, Recording, SearchConfig,
                                           SearchResult, joint_group, load_recording, search_gains,
                                           write_gains)
from handover.runtime.cell_config import CellConfig, load_cell_config
from handover.sim_twin.model import build_model, home_joints
from handover.sim_twin.open_loop import rollout
from handover.sim_twin.twin import Twin


class TwinReplay:
    """Open-loop replay of a recording's commands in a twin with given gain factors (module doc)."""

    def __init__(self, cfg: CellConfig, seed: int = 0, object_start: Optional[np.ndarray] = None):
        self.twin = Twin(cfg, seed=seed, gain_factors=GainFactors())  # nominal: the search applies its own
        self.names = list(cfg.joint_names)
        self.object_start = object_start

    def _columns(self, rec: Recording) -> np.ndarray:
        try:
            return np.array([self.names.index(n) for n in rec.joint_names])
        except ValueError as exc:
            raise GainCalibrationError(f"recording joint not in the cell config: {exc}") from None

    def __call__(self, factors: GainFactors, rec: Recording) -> np.ndarray:
        tw = self.twin
        tw.gain_factors = factors  # applied by reset, on the nominal gains
        tw.reset(object_start=self.object_start)
        velocities0 = None if rec.velocities is None else rec.velocities[0]
        try:
            return rollout(tw, self._columns(rec), rec.positions[0], velocities0, rec.commands, rec.period_s)[0]
        except ValueError as exc:
            raise GainCalibrationError(f"recording: {exc}") from None


def excitation_commands(cfg: CellConfig, seconds: float = 8.0, seed: int = 0,
                        arm_amplitude: float = 0.08, hand_amplitude: float = 0.04) -> np.ndarray:
    """(T, 44) PD targets (rad, contract order) around the default pose (module doc)."""
    rng = np.random.default_rng(seed)
    steps = int(round(seconds / cfg.control_period_s))
    home = home_joints(cfg)
    model = build_model(cfg)
    lo, hi = model.jnt_range[[model.joint(n).id for n in cfg.joint_names]].T
    amp = np.array([hand_amplitude if joint_group(n).endswith("hand") else arm_amplitude for n in cfg.joint_names])
    out = np.empty((steps, len(home)))
    for j in range(len(home)):
        t = 0
        while t < steps:
            hold = int(rng.integers(8, 25))
            target = home[j] + rng.uniform(-amp[j], amp[j])
            out[t:t + hold, j] = np.clip(target, lo[j] + 0.02, hi[j] - 0.02)
            t += hold
    return out


def record_twin(cfg: CellConfig, commands: np.ndarray, factors: GainFactors = GainFactors(),
                seed: int = 0, object_start: Optional[np.ndarray] = None) -> Recording:
    """Drive a twin with gain ``factors`` by ``commands`` (T, 44) from the default pose (the object at
    ``object_start``, default the config's); the recording."""
    tw = Twin(cfg, seed=seed, gain_factors=factors)
    tw.reset(object_start=object_start)
    index = np.arange(44)
    pos = [tw.joint_positions()]
    vel = [tw.data.qvel[tw.dof_adr].copy()]
    for cmd in commands:
        tw.set_targets(index, cmd)
        tw.step()
        pos.append(tw.joint_positions())
        vel.append(tw.data.qvel[tw.dof_adr].copy())
    return Recording(tuple(cfg.joint_names), cfg.control_period_s, np.asarray(commands, float),
                     np.array(pos), np.array(vel))


# Where calibration runs park the object: on the floor out of both robots' reach (m, world), so that
# the joints' tracking is not disturbed by contacts with it (a recording for calibration is made
# without the object in the hands).
PARKED_OBJECT = np.array([4.0, 4.0, 0.1])


def calibrate_twin_gains(cfg: CellConfig, rec: Recording, search: SearchConfig = SearchConfig(),
                         progress=None, object_start: Optional[np.ndarray] = PARKED_OBJECT) -> SearchResult:
    """Search the twin's gain factors for ``rec`` (:func:`handover.calibration.pd_gains.search_gains`)."""
    kwargs = {} if progress is None else {"progress": progress}
    return search_gains(rec, TwinReplay(cfg, object_start=object_start), search, **kwargs)


# -- handover calibrate gains -----------------------------------------------------------------------


def add_parser(subparsers) -> None:
    p = calibrate_subparsers(subparsers).add_parser(
        "gains", help="fit the twin's PD gains per joint group to a recording of commands and joint states",
        description="Search per joint group (thrower/catcher arm/hand) the factors of the twin's PD stiffness and "
                    "damping so that the twin, driven by the recorded targets, tracks the recorded joint positions "
                    "best; writes <calibration-dir>/twin_pd_gains.yaml and prints the MSE before and after.")
    p.add_argument("recording", type=Path, help="a bag recorded by handover record (folder or .mcap), or an .npz with "
                   "joint_names, period_s, commands, positions[, velocities] (format: handover.calibration.pd_gains)")
    p.add_argument("--config", type=Path, default=None, help="cell config (default: the packaged launch/cell.yaml)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"gains file to write (default: <devices.calibration_dir>/{GAINS_FILE})")
    p.add_argument("--start", type=float, default=0.0, help="window start, s from the recording's start")
    p.add_argument("--end", type=float, default=None, help="window end, s")
    p.add_argument("--samples", type=int, default=SearchConfig.samples, help="candidates per iteration")
    p.add_argument("--iterations", type=int, default=SearchConfig.iterations, help="1: the recipe's one-shot search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    cfg = load_cell_config(args.config)
    try:
        rec = load_recording(args.recording, cfg).window(args.start, args.end)
    except ValueError as exc:
        print(f"handover calibrate gains: {exc}", file=sys.stderr)
        return 2
    search = SearchConfig(samples=args.samples, elite=max(1, args.samples // 5), iterations=args.iterations, seed=args.seed)
    try:
        result = calibrate_twin_gains(cfg, rec, search)
    except GainCalibrationError as exc:
        print(f"handover calibrate gains: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(cfg.devices.calibration_dir) / GAINS_FILE
    write_gains(out, result.factors, {"recording": str(args.recording), **result.to_doc()})
    if args.json:
        print(json.dumps({"file": str(out), "groups": result.factors.to_doc(), **result.to_doc()}, indent=2))
    else:
        for g, v in result.factors.to_doc().items():
            if g in result.mse_nominal:
                print(f"{g:13s} stiffness x{v['stiffness_factor']:.3f} damping x{v['damping_factor']:.3f}  "
                      f"MSE {result.mse_nominal[g]:.3g} -> {result.mse_calibrated[g]:.3g} rad^2 "
                      f"({result.improvement()[g]:.1f}x smaller)")
        print(f"wrote {out} ({result.rollouts} rollouts, {result.seconds:.1f} s)")
    return 0


def _main() -> None:  # pragma: no cover - manual use
    cfg = load_cell_config()
    rec = record_twin(cfg, excitation_commands(cfg), GainFactors({"thrower/arm": 1.2}, {"thrower/arm": 0.8}))
    t0 = time.monotonic()
    r = calibrate_twin_gains(cfg, rec)
    print(r.factors, r.mse_nominal, r.mse_calibrated, time.monotonic() - t0)


if __name__ == "__main__":  # pragma: no cover
    _main()
