"""Benchmark of the xArm driver on the real SDK against an emulated controller in another process:
the achieved servo stream rate, the stream's period jitter, the SDK's round trips, the CPU share of
the driver's stream thread and of the whole driver process (the SDK's own threads included), and
how long the control loop's ``command()`` takes.

``python -m handover.drivers.xarm.benchmark [--rate 100 --rate 250] [--duration 5] [--json]``

The emulator (``python -m handover.drivers.xarm.emulator``, rate-limited joints) runs as a child
process on a free loopback address (port 502: root, CAP_NET_BIND_SERVICE or ``unshare -rn``). A
20 Hz control loop in the main thread streams a slow sinusoid on joint 3 within its limits. CPU
shares are of one core (1.0 = a whole core). Times in ms.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from typing import Optional

import numpy as np

from handover.drivers.xarm.config import XArmConfig
from handover.drivers.xarm.driver import XArmJointGroup
from handover.drivers.xarm.testing import loopback_address, port_502_problem
from handover.runtime.cell_config import load_cell_config


def _percentiles(values, scale: float = 1e3) -> dict:
    v = np.asarray(list(values), dtype=float) * scale
    if v.size == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def start_emulator(address: str) -> subprocess.Popen:
    """The emulator as a child process; returns once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "handover.drivers.xarm.emulator", "--address", address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc
    raise RuntimeError(f"the emulator did not start: exit code {proc.wait()}")


def run(rate_hz: float, duration_s: float, address: str) -> dict:
    """Stream for ``duration_s`` at ``rate_hz`` against the controller at ``address``; the figures."""
    cell = load_cell_config()
    arm_cfg = cell.thrower.arm
    dev = XArmJointGroup.from_cell_config(cell, "thrower", XArmConfig(address=address, stream_rate_hz=rate_hz))
    dev.configure()
    try:
        time.sleep(0.5)
        idle_t0, idle_cpu0 = time.monotonic(), time.process_time()
        time.sleep(1.0)
        idle_process_share = (time.process_time() - idle_cpu0) / (time.monotonic() - idle_t0)
        dev.activate()
        time.sleep(0.3)
        lower, upper = np.array(arm_cfg.lower), np.array(arm_cfg.upper)
        mid = 0.5 * (lower + upper)
        amplitude = 0.3 * (upper - lower)
        period = cell.control_period_s
        stats0 = dev.stream_stats()
        wall0, cpu0 = time.monotonic(), time.process_time()
        command_s = []
        k = 0
        while time.monotonic() - wall0 < duration_s:
            target = mid.copy()
            target[2] += amplitude[2] * math.sin(2 * math.pi * 0.5 * k * period)
            t0 = time.perf_counter()
            dev.command(target, time.monotonic())
            command_s.append(time.perf_counter() - t0)
            dev.read(time.monotonic())
            k += 1
            time.sleep(max(0.0, wall0 + k * period - time.monotonic()))
        wall = time.monotonic() - wall0
        process_share = (time.process_time() - cpu0) / wall
        stats = dev.stream_stats()
        sends = np.array([t for t in stats.send_times if t >= wall0])
        intervals = np.diff(sends)
        return {
            "configured_rate_hz": rate_hz,
            "achieved_rate_hz": (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 else 0.0,
            "interval_ms": _percentiles(intervals),
            "servo_rtt_ms": _percentiles(list(stats.servo_rtt_s)[-len(sends):]),
            "read_rtt_ms": _percentiles(list(stats.read_rtt_s)[-len(sends):]),
            "skipped_cycles": stats.skipped_cycles - stats0.skipped_cycles,
            "stream_thread_cpu_share": (stats.thread_cpu_s - stats0.thread_cpu_s) / wall,
            "process_cpu_share": process_share,
            "idle_connected_process_cpu_share": idle_process_share,
            "command_ms": _percentiles(command_s),
            "duration_s": wall,
        }
    finally:
        dev.close()


def print_figures(r: dict) -> None:
    def pct(d):
        return f"p50 {d['p50']:.3f}  p99 {d['p99']:.3f}  max {d['max']:.3f}"

    print(f"xArm servo stream at {r['configured_rate_hz']:g} Hz ({r['duration_s']:.1f} s, emulated controller "
          "in a child process)")
    print(f"  achieved stream rate     {r['achieved_rate_hz']:.2f} Hz   skipped cycles {r['skipped_cycles']}")
    print(f"  interval between targets {pct(r['interval_ms'])} ms")
    print(f"  set_servo_angle_j rtt    {pct(r['servo_rtt_ms'])} ms")
    print(f"  get_joint_states rtt     {pct(r['read_rtt_ms'])} ms")
    print(f"  control loop command()   {pct(r['command_ms'])} ms")
    print(f"  CPU: stream thread {100 * r['stream_thread_cpu_share']:.1f} %, driver process "
          f"{100 * r['process_cpu_share']:.1f} % (connected, idle: {100 * r['idle_connected_process_cpu_share']:.1f} %) "
          "of one core")


def run_rates(rates, duration_s: float, on_result=None) -> list[dict]:
    """:func:`run` at each rate (Hz) for ``duration_s`` against one emulator child process (started on
    a free loopback address, stopped afterwards); ``on_result(figures)`` after each rate."""
    address = loopback_address()
    proc = start_emulator(address)
    results = []
    try:
        for rate in rates:
            results.append(run(rate, duration_s, address))
            if on_result is not None:
                on_result(results[-1])
    finally:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handover.drivers.xarm.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, action="append", help="stream rate, Hz (repeatable; default 100 and 250)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    problem = port_502_problem()
    if problem:
        print(f"xArm benchmark: {problem}", file=sys.stderr)
        return 2
    results = run_rates(args.rate or [100.0, 250.0], args.duration, None if args.json else print_figures)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
