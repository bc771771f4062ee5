"""``handover drivers-benchmark``: what the real cell's drivers cost, each on its vendor's library
against its emulator (no hardware needed).

- xArm6 (:mod:`handover.drivers.xarm.benchmark`): the achieved servo stream rate at each configured
  rate, the interval between targets, the SDK's round trips, the CPU share of the stream thread and
  of the driver's process, and what the control loop's ``command()`` costs;
- Allegro (:mod:`handover.drivers.allegro.benchmark`): the PC-side PD loop's period jitter and its
  position-to-torque latency (p50/p99) next to a bare loop of the same shape measured in the same
  run, and the loop thread's CPU share;
- D435 (:mod:`handover.drivers.realsense.benchmark`): align + detect + deproject per frameset (p50/p99)
  against the 3 ms target.

CPU shares are of one core; times in ms. The figures depend on the machine's load: the load
average is printed with each block.
"""

from __future__ import annotations

import argparse
import os

from handover.runtime.cli_values import positive_float, positive_floats, positive_int

DEVICES = ("xarm", "allegro", "realsense")


def _devices(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in DEVICES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: expected some of {','.join(DEVICES)}")
    return names


def add_parser(sub) -> None:
    p = sub.add_parser("drivers-benchmark", help="the real drivers' cost against their emulators (CPU, loop jitter, "
                       "latency, stream rate)", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--devices", type=_devices, default=DEVICES, metavar="LIST",
                   help="comma-separated, of " + ",".join(DEVICES) + " (default: all)")
    p.add_argument("--seconds", type=positive_float, default=5.0, metavar="S",
                   help="seconds per xArm rate and per Allegro loop (default: %(default)s)")
    p.add_argument("--rates", type=positive_floats, default=(100.0, 250.0), metavar="LIST",
                   help="xArm servo stream rates, Hz (default: 100,250)")
    p.add_argument("--frames", type=positive_int, default=300, metavar="N", help="D435 framesets timed (default: %(default)s)")
    p.set_defaults(func=run)


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def run(args) -> int:
    from handover.runtime import run_status

    for name in args.devices:
        print(f"== {name} ({_load()})", flush=True)
        if name == "xarm":
            from handover.drivers.xarm import benchmark as xb
            from handover.drivers.xarm.testing import port_502_problem

            problem = port_502_problem()
            if problem:
                print(f"  skipped: {problem}")
                continue
            xb.run_rates(args.rates, args.seconds, xb.print_figures)
        elif name == "allegro":
            from handover.drivers.allegro.benchmark import run_benchmark

            print(run_benchmark(args.seconds).report())
        else:
            from handover.drivers.realsense.benchmark import run_benchmark

            print("\n".join(run_benchmark(args.frames).lines()))
        run_status.report(f"benchmarked {name}")
    return 0
