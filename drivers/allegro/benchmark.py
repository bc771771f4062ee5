"""Cost of the Allegro driver: its PD loop's period jitter, position-to-torque latency and CPU share,
next to a bare loop measured in the same run.

Both loops run in real time in this process against the emulated hand streaming on a python-can
``virtual`` bus (no SocketCAN on this kernel; a real 1 Mbit/s bus adds ~1 ms per 8-frame cycle):

1. **bare loop**: a thread that receives the four position frames and answers each complete cycle
   with four zero-torque frames -- python-can and threads only, no PD, no locks, no device;
2. **driver**: :class:`~handover.drivers.allegro.driver.AllegroHand` configured and active, holding
   while a 20 Hz control loop streams small sinusoidal targets through the command gate.

Per loop:
- period (ms) between complete cycles as the PC side sees them (arrival of the 4th frame, p50/p99)
  and jitter ``|period - 3 ms|`` (p50/p99);
- latency (ms): from the emulator sending a cycle's 4th position frame to it receiving the 4th
  torque frame that answers it (p50/p99) -- the "position to torque" time the hand sees;
- of that latency, the PC side: from the 4th position frame's arrival to the 4th torque frame sent;
- late or missing replies: cycles whose four torque frames did not all come back before the next
  cycle started (the frames carry no sequence number: a reply later than a period is counted for
  the next cycle, so the latency p99 is approximate when this count is not small);
- CPU share (% of one core): the loop thread's own CPU time over wall time; the whole process's
  (emulator and, for the driver, the 20 Hz caller included) is shown too;
- unanswered cycles.

``python -m handover.drivers.allegro.benchmark --seconds 5`` (``main``); :func:`run_benchmark`
returns the figures as a :class:`BenchmarkResult`. Clocks: ``time.perf_counter`` / ``time.monotonic``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import can
import numpy as np

from handover.drivers.allegro import protocol as proto
from handover.drivers.allegro.config import AllegroConfig
from handover.drivers.allegro.driver import AllegroHand
from handover.drivers.allegro.emulator import AllegroEmulator, IdealJoints, allegro_joint_index
from handover.drivers.joint_group import JointGroupInfo

PERIOD_S = 0.003


@dataclass(frozen=True)
class LoopFigures:
    """One loop's figures (ms, %, counts)."""

    cycles: int
    period_p50_ms: float
    period_p99_ms: float
    jitter_p50_ms: float
    jitter_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    compute_p50_ms: float
    compute_p99_ms: float
    thread_cpu_percent: float
    process_cpu_percent: float
    late_replies: int


@dataclass(frozen=True)
class BenchmarkResult:
    seconds: float
    bare: LoopFigures
    driver: LoopFigures

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def report(self) -> str:
        rows = [("cycles", "cycles", "{:d}"), ("period p50 / p99 (ms)", ("period_p50_ms", "period_p99_ms"), "{:.3f}"),
                ("jitter |T - 3 ms| p50 / p99 (ms)", ("jitter_p50_ms", "jitter_p99_ms"), "{:.3f}"),
                ("position->torque p50 / p99 (ms)", ("latency_p50_ms", "latency_p99_ms"), "{:.3f}"),
                ("  of which PC side p50 / p99 (ms)", ("compute_p50_ms", "compute_p99_ms"), "{:.3f}"),
                ("loop thread CPU (% of a core)", "thread_cpu_percent", "{:.1f}"),
                ("process CPU (% of a core)", "process_cpu_percent", "{:.1f}"),
                ("late or missing replies", "late_replies", "{:d}")]
        lines = [f"Allegro PD loop, {self.seconds:.1f} s per loop, virtual CAN bus, emulated hand streaming every 3 ms",
                 f"{'':36s} {'bare loop':>17s} {'driver':>17s}"]
        for label, keys, fmt in rows:
            cells = []
            for figures in (self.bare, self.driver):
                if isinstance(keys, tuple):
                    cells.append(" / ".join(fmt.format(getattr(figures, k)) for k in keys))
                else:
                    cells.append(fmt.format(getattr(figures, keys)))
            lines.append(f"{label:36s} {cells[0]:>17s} {cells[1]:>17s}")
        return "\n".join(lines)


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    a = np.asarray(values) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _figures(timing: Sequence[tuple[float, float]], emulator: AllegroEmulator, thread_cpu_s: float,
             process_cpu_s: float, wall_s: float) -> LoopFigures:
    """``timing``: (arrival of a cycle's 4th position frame, its 4th torque frame sent) on the PC side (s)."""
    arrivals = [a for a, _ in timing]
    periods = np.diff(np.asarray(arrivals))
    c50, c99 = _percentiles([sent - arrived for arrived, sent in timing])
    p50, p99 = _percentiles(periods)
    j50, j99 = _percentiles(np.abs(periods - PERIOD_S))
    sent = emulator.cycle_sent
    latencies, answered = [], set()
    for number, t in list(emulator.reply_received):
        if number in sent and number not in answered:
            answered.add(number)
            latencies.append(t - sent[number])
    l50, l99 = _percentiles(latencies)
    return LoopFigures(cycles=len(arrivals), period_p50_ms=p50, period_p99_ms=p99, jitter_p50_ms=j50,
                       jitter_p99_ms=j99, latency_p50_ms=l50, latency_p99_ms=l99, compute_p50_ms=c50, compute_p99_ms=c99,
                       thread_cpu_percent=100.0 * thread_cpu_s / wall_s,
                       process_cpu_percent=100.0 * process_cpu_s / wall_s,
                       late_replies=max(0, len(sent) - len(answered)))


def _hand_info() -> JointGroupInfo:
    names = tuple(f"joint_{k}.0" for k in range(proto.DOF))
    return JointGroupInfo(names=names, lower=(-0.5,) * 16, upper=(1.7,) * 16, provides_velocity=True,
                          provides_effort=False, velocity_limit=(3.0,) * 16, control_period_s=0.05, stale_periods=3.0)


def _emulator(channel: str) -> tuple[AllegroEmulator, IdealJoints]:
    joints = IdealJoints(np.full(proto.DOF, 0.3))
    emulator = AllegroEmulator(joints, allegro_joint_index([f"joint_{k}.0" for k in range(proto.DOF)]),
                               {"interface": "virtual", "channel": channel})
    emulator.record_timing = True
    emulator.open()
    emulator.start_streaming()
    return emulator, joints


def _bare_loop(channel: str, seconds: float) -> LoopFigures:
    emulator, _ = _emulator(channel)
    bus = can.Bus(interface="virtual", channel=channel)
    stop = threading.Event()
    timing: list[tuple[float, float]] = []
    cpu = [0.0]
    zero = bytes(8)

    def loop() -> None:
        seen = 0
        cpu0 = time.thread_time()
        while not stop.is_set():
            msg = bus.recv(timeout=0.005)
            if msg is None or msg.is_remote_frame:
                continue
            command = msg.arbitration_id >> 2
            if proto.CMD_POSITION <= command < proto.CMD_POSITION + 4:
                seen |= 1 << (command - proto.CMD_POSITION)
                if seen == 0xF:
                    seen = 0
                    arrived = time.monotonic()
                    for finger in range(4):
                        bus.send(can.Message(arbitration_id=proto.can_id(proto.CMD_SET_TORQUE + finger, 0),
                                             is_extended_id=False, data=zero))
                    timing.append((arrived, time.monotonic()))
            cpu[0] = time.thread_time() - cpu0

    thread = threading.Thread(target=loop, name="allegro-bench/bare", daemon=True)
    try:
        thread.start()
        for command, data in ((proto.CMD_SET_PERIOD, proto.encode_period(3, 0, 0)), (proto.CMD_SYSTEM_ON, b"")):
            bus.send(can.Message(arbitration_id=proto.can_id(command, 0), is_extended_id=False, data=data))
        time.sleep(0.2)  # warm up
        timing.clear()
        emulator.cycle_sent.clear()
        emulator.reply_received.clear()
        wall0, proc0, cpu0 = time.perf_counter(), time.process_time(), cpu[0]
        time.sleep(seconds)
        wall, proc, thread_cpu = time.perf_counter() - wall0, time.process_time() - proc0, cpu[0] - cpu0
        sent_until = dict(emulator.cycle_sent)
        stop.set()
        thread.join()
        emulator.cycle_sent = sent_until
        return _figures(list(timing), emulator, thread_cpu, proc, wall)
    finally:
        stop.set()
        bus.shutdown()
        emulator.close()


def _driver_loop(channel: str, seconds: float) -> LoopFigures:
    emulator, _ = _emulator(channel)
    # the emulated hand streams from a thread of this process: a loaded machine may deschedule it for
    # longer than the hardware default of 50 ms, which is not what this benchmark measures
    config = AllegroConfig(interface="virtual", channel=channel, hand_side="right", position_timeout_s=0.25)
    device = AllegroHand(_hand_info(), config, "allegro/bench/hand", record_timing=True)
    try:
        device.configure()
        device.activate()
        time.sleep(0.2)  # warm up
        home = device.read(time.monotonic()).position
        emulator.cycle_sent.clear()
        emulator.reply_received.clear()
        device.stats.timing.clear()
        cpu0 = device.stats.cpu_s
        wall0, proc0 = time.perf_counter(), time.process_time()
        t0 = time.monotonic()
        next_t = t0
        while time.monotonic() - t0 < seconds:  # the 20 Hz control loop: read, command
            now = time.monotonic()
            device.read(now)
            device.command(home + 0.1 * np.sin(2 * np.pi * 0.5 * (now - t0)), now)
            next_t += 0.05
            time.sleep(max(0.0, next_t - time.monotonic()))
        wall, proc = time.perf_counter() - wall0, time.process_time() - proc0
        cpu = device.stats.cpu_s - cpu0
        sent_until = dict(emulator.cycle_sent)
        timing = list(device.stats.timing)
        device.close()
        emulator.cycle_sent = sent_until
        return _figures(timing, emulator, cpu, proc, wall)
    finally:
        device.close()
        emulator.close()


def run_benchmark(seconds: float = 5.0) -> BenchmarkResult:
    """Measure the bare loop, then the driver, ``seconds`` each (real time), in this process."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    bare = _bare_loop(f"allegro-bench-bare-{tag}", seconds)
    driver = _driver_loop(f"allegro-bench-driver-{tag}", seconds)
    return BenchmarkResult(seconds=seconds, bare=bare, driver=driver)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="handover.drivers.allegro.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per loop (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    result = run_benchmark(args.seconds)
    print(result.to_json() if args.json else result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
