"""``handover graph-benchmark``: what the running node graph costs and how well it keeps time.

For each control rate (``--rates``, default the original's 20 Hz and 60 Hz; a rate other than the
config's is a copy of the config with ``control_rate_hz`` overridden) and each layout (``--modes``):

- ``processes``: the launch file's layout, one process per node set (``cell``, ``safety``,
  ``policy``), each running exactly what ``handover node SET`` runs (:func:`build_graph` of that set
  and :meth:`Graph.start`), plus a report of its own figures when it ends;
- ``one-process``: every node in one process (the node set ``all``, what ``handover bringup`` runs).

In both, a bare :class:`~handover.runtime.control_loop.PacedLoop` with no work at the control
period runs in a process of its own for the same time (the baseline: the machine's own wake-up
jitter under the same load), and this process is the operator: it runs ``--episodes`` episodes,
then ``--stops`` safety stops, each mid-episode at a random time after the start (publish ``true``,
``false``, call the reset). Printed per run:

- CPU share of every process over its running time (% of one core), and per thread: the twin's
  physics thread, the executor thread (every node's callbacks), the policy's control loop, and the
  middleware's native threads (``/proc/<pid>/task/<tid>/stat``);
- the policy loop's period jitter (|interval - period| between wake-ups, the loop's clock) next to
  the bare loop's, and their p99 ratio (target: at most :data:`TARGET_JITTER_RATIO`);
- the joint-state-to-command latency (receive of the newest joint state used -> publish of the
  last command of the tick, ``time.perf_counter`` in the policy's process);
- the stop latency: from ``time.monotonic()`` right before the estop publish in this process to
  the last driver holding (the drivers' :attr:`JointGroupNode.stop_events`, ``time.monotonic()``,
  which is one clock for all processes on Linux); target: p99 under :data:`TARGET_STOP_P99_S`;
- the twin's physics steps, how many were stepped late to catch up, and its ``/clock`` messages.

With both layouts, the one-process/processes ratio of the loop's p99 jitter is what sharing the
GIL with the other nodes costs the control loop.

Child processes: ``python -m handover.runtime.graph_benchmark SET --config PATH --report FILE``
(``SET``: a node set, or ``baseline``); each runs until SIGTERM or SIGINT, then writes its report
(JSON) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config
from handover.runtime.errors import InputError

TARGET_JITTER_RATIO = 2.0  # policy loop p99 jitter / bare loop p99 jitter
TARGET_STOP_P99_S = 0.010  # estop publish -> last driver holding
MODES = ("processes", "one-process")
MODE_SETS = {"processes": ("cell", "safety", "policy"), "one-process": ("all",)}
CHILD_SETS = ("cell", "safety", "policy", "all", "baseline")
THREAD_ROLES = {"twin-physics": "twin physics (+ tracker publish)", "executor": "executor (node callbacks)",
                "policy-loop": "policy control loop"}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What one benchmark run does. Rates in Hz; ``settle_s``: wall seconds the graph runs before
    the first episode (discovery); ``speed``: None for real time, else the twin's speed factor
    (``/clock``, ``use_sim_time``), with ``/clock`` every ``clock_every`` physics steps."""

    config: Path = DEFAULT_CONFIG_PATH
    rates: tuple[float, ...] = (20.0, 60.0)
    modes: tuple[str, ...] = MODES
    episodes: int = 3
    stops: int = 10
    speed: Optional[float] = None
    clock_every: int = 1
    seed: int = 0

    def __post_init__(self):
        if not self.rates or not all(np.isfinite(r) and r > 0 for r in self.rates):
            raise InputError(f"graph-benchmark: rates must be positive numbers of Hz, got {list(self.rates)}")
        bad = [m for m in self.modes if m not in MODES]
        if not self.modes or bad:
            raise InputError(f"graph-benchmark: modes {list(self.modes)}: expected some of {', '.join(MODES)}")
        if self.episodes < 0 or self.stops < 0:
            raise InputError(f"graph-benchmark: episodes {self.episodes} and stops {self.stops} must be >= 0")
        if self.speed is not None and not (np.isfinite(self.speed) and self.speed > 0):
            raise InputError(f"graph-benchmark: speed {self.speed} must be > 0")
        if self.clock_every < 1:
            raise InputError(f"graph-benchmark: clock_every {self.clock_every} must be >= 1 physics step")


# ---------------------------------------------------------------------------------------------
# CPU accounting (/proc, Linux)


def _proc_cpu_s(path: str) -> float:
    """utime + stime of a /proc/.../stat file, s."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads: Python threads by name, the rest summed as ``native``
    (the middleware's threads), and ``process`` (all of them)."""
    by_tid = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[str, float] = {"native": 0.0}
    for tid in os.listdir("/proc/self/task"):
        try:
            cpu = _proc_cpu_s(f"/proc/self/task/{tid}/stat")
        except OSError:  # the thread ended meanwhile
            continue
        name = by_tid.get(int(tid), "native")
        out[name] = out.get(name, 0.0) + cpu
    out["process"] = _proc_cpu_s("/proc/self/stat")
    return out


# ---------------------------------------------------------------------------------------------
# Child processes


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass


def _run_baseline(cfg) -> dict:
    from handover.runtime.control_loop import PacedLoop

    loop = PacedLoop(cfg.control_period_s)
    loop.start(lambda k, deadline: None, name="baseline-loop")
    _wait_for_signal()
    loop.stop()
    return {"jitter_s": loop.stats.jitter_s().tolist(), "overruns": loop.stats.overruns}


def _run_node_set(cfg, node_set: str, speed: Optional[float], clock_every: int) -> dict:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from handover.runtime.node_graph import build_graph

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    graph = build_graph(cfg, context, "sim", node_set, real_time=speed is None, speed=speed or 1.0,
                        clock_every=clock_every)
    graph.start()
    wall0, cpu0 = time.monotonic(), thread_cpu_s()
    names = [d.get_name() for d in graph.drivers]
    try:
        _wait_for_signal()
        wall1, cpu1 = time.monotonic(), thread_cpu_s()
    finally:
        graph.shutdown()
        context.try_shutdown()
    report: dict = {"span_s": wall1 - wall0, "cpu_s": {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()},
                    "executor": type(graph.executor).__name__}
    if graph.policy is not None:
        timing = graph.policy.timing()
        report["policy"] = {"jitter_s": timing["jitter_s"].tolist(), "overruns": timing["overruns"],
                            "state_to_command_s": timing["state_to_command_s"].tolist(),
                            "ticks": int(len(timing["wakeups_s"]))}
    if graph.drivers:
        report["stop_events"] = {name: [m for m, _ in d.stop_events] for name, d in zip(names, graph.drivers)}
    if graph.twin is not None:
        tw = graph.twin
        report["twin"] = {"physics_steps": tw.steps, "caught_up": tw.caught_up, "overruns": tw._loop.stats.overruns,
                          "clock_published": tw.clock_published, "sim_time_s": tw.sim_time}
    return report


def child_main(argv: Optional[list[str]] = None) -> int:
    """One benchmark process (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m handover.runtime.graph_benchmark")
    p.add_argument("set", choices=CHILD_SETS)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--speed", type=float, default=None)
    p.add_argument("--clock-every", type=int, default=1)
    args = p.parse_args(argv)
    cfg = load_cell_config(args.config)
    if args.set == "baseline":
        report = _run_baseline(cfg)
    else:
        report = _run_node_set(cfg, args.set, args.speed, args.clock_every)
    report["set"] = args.set
    tmp = args.report.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    tmp.replace(args.report)
    return 0


# ---------------------------------------------------------------------------------------------
# The operator (this process)


class _Operator:
    """Starts episodes, waits for their outcomes, publishes stops and resets: one node, its own executor."""

    def __init__(self, cfg):
        import rclpy
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        from handover.runtime.node_graph import make_executor
        from handover.runtime.ros_interface import Topics, qos_events, qos_latched

        self.topics = Topics.from_config(cfg)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("graph_benchmark_operator", context=self.context)
        self.outcomes: list[dict] = []
        self.node.create_subscription(String, self.topics.twin_outcome, lambda m: self.outcomes.append(json.loads(m.data)),
                                      qos_events())
        self.start_client = self.node.create_client(Trigger, self.topics.start)
        self.reset_client = self.node.create_client(Trigger, self.topics.estop_reset)
        self.estop_pub = self.node.create_publisher(Bool, self.topics.estop, qos_latched())
        self._bool = Bool
        self.executor = make_executor(self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._spin = threading.Thread(target=self._spin_loop, name="operator-executor", daemon=True)
        self._spin.start()

    def _spin_loop(self) -> None:
        while self.context.ok() and not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, client, timeout: float):
        from handover.runtime.ros_interface import call_trigger

        return call_trigger(client, timeout, "graph-benchmark")

    def call_retrying(self, client, timeout: float, attempt_s: float = 5.0):
        """``call`` with a fresh request every ``attempt_s`` until ``timeout``: a service's first
        response can be lost while the middleware is still matching the client."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.call(client, min(attempt_s, max(deadline - time.monotonic(), 0.1)))
            except InputError:
                if time.monotonic() > deadline:
                    raise

    def release(self, timeout: float) -> None:
        """``false`` on the estop, then the reset until it is accepted (the safety node starts latched)."""
        self.estop(False)
        deadline = time.monotonic() + timeout
        while not (res := self.call_retrying(self.reset_client, timeout)).success:
            if time.monotonic() > deadline:
                raise InputError(f"graph-benchmark: {self.topics.estop_reset} refused for {timeout:g} s: {res.message}")
            time.sleep(0.05)

    def start_episode(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (res := self.call_retrying(self.start_client, timeout)).success:
            if time.monotonic() > deadline:
                raise InputError(f"graph-benchmark: {self.topics.start} refused for {timeout:g} s: {res.message}")
            time.sleep(0.1)

    def estop(self, value: bool) -> None:
        self.estop_pub.publish(self._bool(data=value))

    def close(self) -> None:
        self._stop.set()
        self._spin.join(2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


def _drive(op: _Operator, bc: BenchmarkConfig, rng: np.random.Generator, wall_factor: float) -> dict:
    """Episodes, then stops; returns the stops' publish times (monotonic s) and the outcomes."""
    op.release(timeout=60.0)  # waits for the graph to come up; the safety node starts latched
    op.start_episode(timeout=30.0)
    done = 0
    while done < bc.episodes:
        n = len(op.outcomes)
        deadline = time.monotonic() + 30.0
        while len(op.outcomes) <= n:
            if time.monotonic() > deadline:
                raise InputError("graph-benchmark: an episode was not judged within 30 s")
            time.sleep(0.01)
        done += 1
        if done < bc.episodes:
            op.start_episode(timeout=10.0)
    stops = []
    for i in range(bc.stops):
        if i or bc.episodes:
            op.start_episode(timeout=10.0)
        time.sleep(rng.uniform(0.3, 1.8) * wall_factor)  # mid-episode: blend, place, settle or policy steps
        stops.append(time.monotonic())
        op.estop(True)
        time.sleep(0.25)
        op.estop(False)
        time.sleep(0.1)
        op.release(timeout=10.0)
        time.sleep(0.2)
    return {"stops": stops, "outcomes": list(op.outcomes)}


def _config_at_rate(cfg_path: Path, rate: float, folder: Path) -> Path:
    """``cfg_path`` itself at its own rate, else a copy with ``control_rate_hz`` = ``rate`` (the
    bundle path made absolute, so the copy loads from anywhere)."""
    cfg = load_cell_config(cfg_path)
    if rate == cfg.control_rate_hz:
        return cfg_path
    raw = yaml.safe_load(cfg_path.read_text())
    raw["control_rate_hz"] = float(rate)
    raw["joint_state_rate_hz"] = max(float(raw.get("joint_state_rate_hz", rate)), float(rate))
    if cfg.models.bundle is not None:
        raw["models"]["bundle"] = str(cfg.models.bundle)
    out = folder / f"cell_{rate:g}hz.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_cell_config(out)  # validated like any config
    return out


def _child(node_set: str, config: Path, report: Path, bc: BenchmarkConfig) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "handover.runtime.graph_benchmark", node_set, "--config", str(config),
           "--report", str(report), "--clock-every", str(bc.clock_every)]
    if bc.speed is not None:
        cmd += ["--speed", str(bc.speed)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_one(bc: BenchmarkConfig, rate: float, mode: str, folder: Path) -> dict:
    """One rate, one layout: children up, the operator's episodes and stops, children's reports."""
    config = _config_at_rate(bc.config, rate, folder)
    sets = ("baseline",) + MODE_SETS[mode]
    reports = {s: folder / f"{mode}_{rate:g}_{s}.json" for s in sets}
    procs = {s: _child(s, config, reports[s], bc) for s in sets}
    op, failure = None, None
    try:
        op = _Operator(load_cell_config(config))
        driven = _drive(op, bc, np.random.default_rng(bc.seed), 1.0 / (bc.speed or 1.0))
    except InputError as exc:
        failure = str(exc)
    finally:
        if op is not None:
            op.close()
        errors = {}
        for s, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for s, proc in procs.items():
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0 or not reports[s].exists():
                errors[s] = f"exit {proc.returncode}: {err[-1500:]}"
    if failure or errors:
        raise InputError(f"graph-benchmark ({rate:g} Hz, {mode}): {failure or 'the run ended'}; processes that failed: "
                         + ("; ".join(f"{s}: {e.strip()}" for s, e in errors.items()) or "none"))
    loaded = {s: json.loads(reports[s].read_text()) for s in sets}
    return summarize(loaded, driven, rate, mode)


def _pct(values, q) -> float:
    v = np.asarray(values, dtype=float)
    return float(np.percentile(v, q)) if v.size else float("nan")


def _stats_ms(values) -> dict:
    v = np.asarray(values, dtype=float) * 1e3
    return {"n": int(v.size), "p50": _pct(v, 50), "p99": _pct(v, 99), "max": float(v.max()) if v.size else float("nan")}


def stop_latencies(stops: list[float], stop_events: dict[str, list[float]]) -> list[float]:
    """Per stop (its publish time, monotonic s): the last driver's first hold after it, minus the
    publish time (s); ``inf`` if a driver never held before the next stop."""
    out = []
    for i, t0 in enumerate(stops):
        t1 = stops[i + 1] if i + 1 < len(stops) else np.inf
        held = []
        for events in stop_events.values():
            after = [t for t in events if t0 <= t < t1]
            held.append(min(after) if after else np.inf)
        out.append(max(held) - t0 if held else np.inf)
    return out


def summarize(reports: dict, driven: dict, rate: float, mode: str) -> dict:
    """The figures of one run (times in ms, CPU in % of one core)."""
    graph_sets = [s for s in reports if s != "baseline"]
    cpu = {}
    for s in graph_sets:
        r = reports[s]
        span = r["span_s"]
        cpu[s] = {name: 100.0 * v / span for name, v in r["cpu_s"].items() if v > 0 or name == "process"}
    policy = next(reports[s]["policy"] for s in graph_sets if "policy" in reports[s])
    events = next(reports[s]["stop_events"] for s in graph_sets if "stop_events" in reports[s])
    twin = next(reports[s]["twin"] for s in graph_sets if "twin" in reports[s])
    jitter = _stats_ms(policy["jitter_s"])
    baseline = _stats_ms(reports["baseline"]["jitter_s"])
    stops = stop_latencies(driven["stops"], events)
    return {
        "rate_hz": rate, "mode": mode, "executor": reports[graph_sets[0]]["executor"],
        "cpu_percent": cpu,
        "jitter_ms": jitter, "baseline_jitter_ms": baseline,
        "jitter_p99_ratio": jitter["p99"] / max(baseline["p99"], 1e-6),
        "overruns": policy["overruns"], "ticks": policy["ticks"],
        "state_to_command_ms": _stats_ms(policy["state_to_command_s"]),
        "stop_ms": _stats_ms(stops), "stops_missed": int(sum(not np.isfinite(s) for s in stops)),
        "episodes_judged": len(driven["outcomes"]),
        "caught": int(sum(o["success"] for o in driven["outcomes"])),
        "twin": twin,
    }


def _fmt(s: dict) -> str:
    return f"p50 {s['p50']:.3f} ms, p99 {s['p99']:.3f} ms, max {s['max']:.3f} ms (n={s['n']})"


def print_result(r: dict, out) -> None:
    print(f"\n== {r['rate_hz']:g} Hz control, {r['mode']} ({r['executor']}) ==", file=out)
    print("CPU, % of one core over each process's run:", file=out)
    for s, shares in r["cpu_percent"].items():
        threads = ", ".join(f"{THREAD_ROLES.get(k, k)} {v:.1f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])
                            if k != "process")
        print(f"  {s:<8} {shares['process']:6.1f} %  ({threads})", file=out)
    ratio_ok = r["jitter_p99_ratio"] <= TARGET_JITTER_RATIO
    print(f"policy loop period jitter: {_fmt(r['jitter_ms'])}; overruns {r['overruns']} of {r['ticks']} ticks", file=out)
    print(f"bare paced loop (own process, same time): {_fmt(r['baseline_jitter_ms'])}", file=out)
    print(f"  p99 ratio policy/bare {r['jitter_p99_ratio']:.2f} (target <= {TARGET_JITTER_RATIO:g}: "
          f"{'met' if ratio_ok else 'NOT met'})", file=out)
    print(f"joint state -> command latency: {_fmt(r['state_to_command_ms'])}", file=out)
    stop = r["stop_ms"]
    stop_ok = stop["n"] > 0 and r["stops_missed"] == 0 and stop["p99"] < 1e3 * TARGET_STOP_P99_S
    print(f"stop latency (estop publish -> last driver holding): {_fmt(stop)}; missed {r['stops_missed']} "
          f"(target p99 < {1e3 * TARGET_STOP_P99_S:g} ms: {'met' if stop_ok else 'NOT met'})", file=out)
    tw = r["twin"]
    print(f"twin: {tw['physics_steps']} physics steps, {tw['caught_up']} stepped late to catch up, "
          f"{tw['overruns']} late wake-ups, {tw['clock_published']} /clock messages; "
          f"episodes judged {r['episodes_judged']}, caught {r['caught']}", file=out)


def run_benchmark(bc: BenchmarkConfig, out=sys.stdout) -> list[dict]:
    """Every rate x layout of ``bc``; prints each and the GIL comparison; returns the results."""
    results = []
    load = os.getloadavg()
    print(f"graph-benchmark: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"at the start; episodes {bc.episodes}, stops {bc.stops}, "
          f"{'real time' if bc.speed is None else f'speed {bc.speed:g}, /clock every {bc.clock_every} steps'}",
          file=out, flush=True)
    with tempfile.TemporaryDirectory(prefix="graph_benchmark_") as tmp:
        for rate in bc.rates:
            by_mode = {}
            for mode in bc.modes:
                r = run_one(bc, rate, mode, Path(tmp))
                print_result(r, out)
                out.flush()
                results.append(r)
                by_mode[mode] = r
            if len(by_mode) == 2:
                one, sep = by_mode["one-process"], by_mode["processes"]
                print(f"GIL at {rate:g} Hz: loop p99 jitter one-process / processes = "
                      f"{one['jitter_ms']['p99'] / max(sep['jitter_ms']['p99'], 1e-6):.2f}; "
                      f"state->command p99 one-process / processes = "
                      f"{one['state_to_command_ms']['p99'] / max(sep['state_to_command_ms']['p99'], 1e-6):.2f}",
                      file=out, flush=True)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=out)
    return results


def add_parser(sub) -> None:
    p = sub.add_parser("graph-benchmark", help="the running node graph: CPU per node set, loop jitter, latencies",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="cell config (default: %(default)s)")
    p.add_argument("--rates", default="20,60", help="control rates in Hz, comma-separated (default: %(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="layouts, comma-separated (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=3, help="episodes per run (default: %(default)s)")
    p.add_argument("--stops", type=int, default=10, help="safety stops per run, each mid-episode (default: %(default)s)")
    p.add_argument("--speed", type=float, default=None, metavar="X",
                   help="run the twin X times real time with /clock (default: real time)")
    p.add_argument("--clock-every", type=int, default=1, metavar="N", help="with --speed: /clock every N physics steps")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        raise InputError(f"graph-benchmark: --rates {args.rates!r}: expected numbers separated by commas") from None
    bc = BenchmarkConfig(config=args.config, rates=rates, modes=tuple(args.modes.split(",")), episodes=args.episodes,
                         stops=args.stops, speed=args.speed, clock_every=args.clock_every)
    run_benchmark(bc)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
