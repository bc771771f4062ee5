"""``handover twin ...``: export the model, render an episode, benchmark the twin."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from handover.runtime import run_status
from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config
from handover.runtime.cli_values import positive_float, positive_int
from handover.runtime.files import atomic_folder, output_file, output_folder


def add_parser(sub) -> None:
    twin = sub.add_parser("twin", help="the MuJoCo twin: export the model, render, benchmark")
    tsub = twin.add_subparsers(dest="twin_command", metavar="TOOL", required=True)

    p = tsub.add_parser("export-mjcf", help="write the compiled cell model as MJCF (open it in MuJoCo's viewer)")
    p.add_argument("output", type=Path, help="OUT.xml")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.set_defaults(func=export_mjcf)

    p = tsub.add_parser("render", help="PNG frames of an episode from the d435 and overview cameras (offscreen)")
    p.add_argument("--out", type=Path, default=Path("twin_frames"), help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=30, help="control steps (default: one 30-step episode)")
    p.add_argument("--bundle", type=Path, default=None, help="drive the twin with this policy bundle (default: the config's models.bundle; none: hold the reset pose)")
    p.add_argument("--width", type=positive_int, default=640)
    p.add_argument("--height", type=positive_int, default=480)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.set_defaults(func=render)

    p = tsub.add_parser("benchmark", help="real-time factor of the full cell and the cost of one episode (episode_steps control steps)")
    p.add_argument("--seconds", type=positive_float, default=20.0, help="simulated seconds to time (default: %(default)s)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.set_defaults(func=benchmark)


def export_mjcf(args: argparse.Namespace) -> int:
    from handover.sim_twin.model import export_mjcf as write

    output_file(args.output, "MJCF output", ".xml", inputs=[args.config])
    path = write(load_cell_config(args.config), args.output)
    print(f"wrote {path} (load it with mujoco.MjModel.from_xml_path or `python -m mujoco.viewer --mjcf {path}`)")
    return 0


def _controller(cfg, twin, bundle):
    if bundle is None:
        from handover.sim_twin.episode import HoldPose

        return HoldPose(twin.data.ctrl[twin.actuator_ids].copy())
    from handover.runtime.contract import ContractSpec
    from handover.runtime.contract_state import ContractNoise
    from handover.runtime.policy_controller import PolicyController
    from handover.runtime.policy_networks import PolicyNetworks

    return PolicyController(ContractSpec.from_config(cfg), PolicyNetworks.load(bundle), cfg.goal.center, cfg.object.start_position,
                            ContractNoise(history=cfg.history_noise))


def render(args: argparse.Namespace) -> int:
    from handover.sim_twin import render as r

    reason = r.gl_available()
    if reason:
        print(f"handover twin render: {reason}\n  install Debian's libegl1 libgl1-mesa-dri (EGL) or set MUJOCO_GL=osmesa "
              "with libosmesa6", file=sys.stderr)
        return 2
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.episode import run_episode
    from handover.sim_twin.twin import Twin

    cfg = load_cell_config(args.config)
    bundle = args.bundle or cfg.models.bundle
    out = output_folder(args.out, "--out", inputs=[args.config, bundle])
    twin = Twin(cfg)
    devices = TwinDevices.create(twin)
    devices.bring_up()
    controller = _controller(cfg, twin, bundle)
    with atomic_folder(out) as tmp:  # an earlier render stays until this one is complete
        writer = r.FrameWriter(twin.model, tmp, args.width, args.height)
        writer.write(twin.data, 0)

        def on_step(rec) -> None:
            writer.write(twin.data, rec.step + 1)
            print(f"\rrendered step {rec.step + 1}/{args.steps}", end="", file=sys.stderr, flush=True)
            run_status.report(f"{rec.step + 1} of {args.steps} steps rendered; {out} left as it was")

        try:
            run_episode(devices, controller, args.steps, on_step)
            sheet = writer.contact_sheet()
        finally:
            writer.close()
    print(f"\nwrote {2 * (args.steps + 1)} frames to {out}/ (d435_NNN.png, overview_NNN.png); "
          f"overview: {out / Path(sheet).name}")
    return 0


def benchmark(args: argparse.Namespace) -> int:
    """Real-time factor of the full cell (physics only, object in the thrower's hand, PD holding the
    reset pose) over ``--seconds`` of simulated time, and the cost of whole episodes through the
    devices. Rates from the config: ``twin.substeps`` physics steps of ``timestep_s`` per control
    period (20 Hz: 6 of 1/120 s)."""
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.episode import HoldPose, run_episode
    from handover.sim_twin.twin import Twin

    cfg = load_cell_config(args.config)
    twin = Twin(cfg)
    period = cfg.control_period_s
    steps = max(1, int(round(args.seconds / period)))
    twin.advance(0.1)  # settle the object in the hand (0.1 s) before timing
    t_sim0, t_wall0, t_cpu0 = twin.time, time.perf_counter(), time.process_time()
    twin.step(steps)
    wall, cpu = time.perf_counter() - t_wall0, time.process_time() - t_cpu0
    simulated = twin.time - t_sim0  # steps x control period
    rtf = simulated / wall
    devices = TwinDevices.create(twin)
    devices.bring_up()
    hold = HoldPose(twin.data.ctrl[twin.actuator_ids].copy())
    costs = []
    for _ in range(20):
        t0 = time.perf_counter()
        twin.reset()
        run_episode(devices, hold, cfg.episode_steps)
        costs.append(time.perf_counter() - t0)
    costs_ms = np.array(costs) * 1e3
    in_hand = np.linalg.norm(twin.object_position() - np.array(cfg.object.start_position)) < 0.05
    print(f"full cell ({twin.model.nv} DoF, object {'in hand' if in_hand else 'NOT in hand'}), control at "
          f"{cfg.control_rate_hz:g} Hz: {twin.substeps} physics steps of {twin.model.opt.timestep * 1e3:.3f} ms per "
          f"{period * 1e3:.0f} ms control step, one core:")
    print(f"  real-time factor: {rtf:.1f}x  ({simulated:g} s simulated = {steps} control steps in {wall:.3f} s wall, "
          f"{cpu:.3f} s CPU: {wall / steps * 1e3:.2f} ms per control step; target >= 20x: {'met' if rtf >= 20 else 'NOT met'})")
    print(f"  one {cfg.episode_steps}-step episode ({cfg.episode_steps * period:.2f} s simulated) incl. reset "
          f"and device I/O: median {np.median(costs_ms):.1f} ms, max {costs_ms.max():.1f} ms over {len(costs)} episodes")
    return 0
