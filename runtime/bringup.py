"""``handover bringup``: the whole cell's node graph in one process, without the ``ros2`` CLI.

Starts the same nodes as ``ros2 launch handover bringup.launch.py`` (see :mod:`handover.runtime.node_graph`),
then acts as the operator: releases the safety stop the safety node starts with (``false`` on
``/handover/estop``, then ``/handover/estop/reset``; it prints that it did), calls
``/handover/start`` for each of N episodes, waits for the policy's end of the episode on
``/handover/policy/episode_end`` (done, stopped, fault: why, cell lost) and, for a finished
episode, the twin's judgement on ``/handover/twin/outcome``, prints each result and a summary with
the control loop's timing. Exits 0 when every episode ran to its end (caught or not), 1 when one
ended otherwise (the run stops at a safety stop or a lost cell). ``--measure-stop K`` then
publishes K safety stops (each followed by a release) and prints the stop latency: from the
publish of ``true`` to the last driver holding.
"""

from __future__ import annotations

import json
import queue
import re
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from handover.runtime.node_graph import add_common_arguments, build_graph
from handover.runtime.cell_config import load_cell_config
from handover.runtime import run_status
from handover.runtime.cli_values import nonneg_int, positive_float
from handover.runtime.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("bringup", help="bring up the whole cell (twin by default) and run N episodes over ROS 2",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    add_common_arguments(p)
    p.add_argument("--episodes", type=nonneg_int, default=1, metavar="N", help="episodes to run (default: %(default)s)")
    p.add_argument("--measure-stop", type=nonneg_int, default=0, metavar="K",
                   help="after the episodes, measure the stop latency over K stops (default: none)")
    p.add_argument("--timeout", type=positive_float, default=20.0, metavar="S", help="give up on an episode after S wall seconds")
    p.set_defaults(func=run)


def _percentiles_ms(values) -> str:
    v = np.asarray(values, dtype=float) * 1e3
    if v.size == 0:
        return "no samples"
    return f"p50 {np.percentile(v, 50):.3f} ms, p99 {np.percentile(v, 99):.3f} ms, max {v.max():.3f} ms (n={v.size})"


OUTCOME_WAIT_S = 5.0  # wall s: how long a finished episode waits for the twin's judgement


@dataclass
class EpisodeResult:
    """One episode as the operator saw it: ``end`` the policy's ``episode_end`` (dict), ``outcome``
    the twin's judgement (dict) for a finished episode, None without a twin."""

    n: int
    end: dict
    outcome: Optional[dict] = None

    def line(self, total: int) -> str:
        if self.end["reason"] != "done":
            detail = f": {self.end['detail']}" if self.end.get("detail") else ""
            return f"episode {self.n}/{total}: {self.end['reason']}{detail}"
        if self.outcome is None:
            return f"episode {self.n}/{total}: done (no judgement on the twin's outcome topic within {OUTCOME_WAIT_S:g} s)"
        verdict = "caught" if self.outcome["success"] else "not caught"
        return f"episode {self.n}/{total}: {verdict}: {self.outcome['reason']}"


class Operator:
    """The test/operator side: a node that releases the initial latch, starts episodes, reads how
    they ended and the twin's outcomes, and stops the cell."""

    def __init__(self, graph):
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        from handover.runtime.ros_interface import Topics, parse_episode_end, qos_events, qos_latched

        self.graph = graph
        self.topics = Topics.from_config(graph.cfg)
        import rclpy

        self.node = rclpy.create_node("operator", context=graph.context)
        self.outcomes: queue.Queue = queue.Queue()
        self.ends: queue.Queue = queue.Queue()
        self.results: list[EpisodeResult] = []  # run_episodes fills it
        self.node.create_subscription(String, self.topics.twin_outcome, lambda m: self.outcomes.put(json.loads(m.data)),
                                      qos_events())
        self.node.create_subscription(String, self.topics.episode_end, lambda m: self.ends.put(parse_episode_end(m)),
                                      qos_events())
        self.start_client = self.node.create_client(Trigger, self.topics.start)
        self.reset_client = self.node.create_client(Trigger, self.topics.estop_reset)
        self.estop_pub = self.node.create_publisher(Bool, self.topics.estop, qos_latched())
        graph.executor.add_node(self.node)
        graph.nodes.append(self.node)  # destroyed with the graph

    def call(self, client, timeout: float = 5.0):
        from handover.runtime.ros_interface import call_trigger

        return call_trigger(client, timeout)

    def release_latch(self, timeout: float = 10.0) -> str:
        """Release the safety stop (the safety node starts latched): ``false`` on the estop topic,
        then the reset service until it accepts (it refuses while the safety node still has a
        ``true`` as the last estop message). Prints what it did; returns the service's message."""
        print(f"operator: the safety node starts latched; releasing it: false on {self.topics.estop}, "
              f"then {self.topics.estop_reset}", flush=True)
        self.estop(False)
        deadline = time.monotonic() + timeout
        while True:
            res = self.call(self.reset_client, timeout)
            if res.success:
                print(f"operator: {self.topics.estop_reset}: {res.message}", flush=True)
                return res.message
            if time.monotonic() > deadline:
                raise InputError(f"{self.topics.estop_reset} refused: {res.message}")
            time.sleep(0.1)

    def start_episode(self, timeout: float = 10.0) -> str:
        """Call /handover/start until accepted (the graph needs a moment to connect)."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.call(self.start_client)
            if res.success:
                return res.message
            if time.monotonic() > deadline:
                raise InputError(f"{self.topics.start} refused: {res.message}")
            time.sleep(0.1)

    def estop(self, value: bool) -> None:
        from std_msgs.msg import Bool

        self.estop_pub.publish(Bool(data=value))


def _wait_for(q: queue.Queue, match, timeout: float) -> Optional[dict]:
    """The first item of ``q`` for which ``match`` is true within ``timeout`` s (others are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            item = q.get(timeout=left)
        except queue.Empty:
            return None
        if match(item):
            return item


def run_episode(op: Operator, n: int, timeout: float) -> EpisodeResult:
    """Start one episode, wait for its end (``episode_end``) and, if it finished, the twin's outcome."""
    message = op.start_episode()
    m = re.search(r"episode (\d+)", message)
    if m is None:
        raise InputError(f"{op.topics.start}: accepted, but the answer names no episode: {message!r}")
    number = int(m.group(1))
    end = _wait_for(op.ends, lambda e: e["episode"] == number, timeout)
    if end is None:
        raise InputError(f"episode {n}: the policy reported no end on {op.topics.episode_end} within {timeout} s")
    outcome = None
    if end["reason"] == "done":
        outcome = _wait_for(op.outcomes, lambda o: o.get("episode") == number, OUTCOME_WAIT_S)
    return EpisodeResult(n, end, outcome)


def run_episodes(op: Operator, episodes: int, timeout: float, release: bool = True) -> int:
    """Release the initial latch (``release``), then start ``episodes`` episodes one after the other;
    print how each ended (caught / not caught, or stopped / fault / cell lost with the reason) and a
    summary. The run ends early at a safety stop or a lost cell (a fault lets it go on: the next
    start clears it). Returns the catches; :attr:`Operator.results` keeps every
    :class:`EpisodeResult`."""
    op.results = []
    if episodes and release:
        op.release_latch()
    for n in range(1, episodes + 1):
        result = run_episode(op, n, timeout)
        op.results.append(result)
        print(result.line(episodes), flush=True)
        done = sum(bool(r.outcome and r.outcome["success"]) for r in op.results)
        run_status.report(f"{n} of {episodes} episodes run ({done} caught); the drivers held and closed")
        if result.end["reason"] in ("stopped", "cell lost"):
            print(f"operator: episode {n} ended by {result.end['reason']}: not starting the remaining "
                  f"{episodes - n} episode(s)", flush=True)
            break
    caught = sum(bool(r.outcome and r.outcome["success"]) for r in op.results)
    if episodes:
        ran = len(op.results)
        ended = {}
        for r in op.results:
            if r.end["reason"] != "done":
                ended[r.end["reason"]] = ended.get(r.end["reason"], 0) + 1
        other = "".join(f", {k} {v}" for k, v in ended.items())
        print(f"summary: {caught}/{episodes} episodes caught ({100.0 * caught / episodes:.0f} %); "
              f"{ran} run{other}", flush=True)
    return caught


def exit_status(op: Operator, episodes: int) -> int:
    """0 if all ``episodes`` ran to their end (caught or not), else 1 (a stop, a fault, a lost cell)."""
    return 0 if len(op.results) == episodes and all(r.end["reason"] == "done" for r in op.results) else 1


def measure_stop(op: Operator, drivers, k: int, period_s: float) -> list[float]:
    """K stops: publish true, wait until every driver held, publish false, reset. Latencies in s."""
    latencies = []
    for _ in range(k):
        marks = [len(d.stop_events) for d in drivers]
        t0 = time.perf_counter()
        op.estop(True)
        deadline = t0 + 1.0
        while any(len(d.stop_events) <= m for d, m in zip(drivers, marks)) and time.perf_counter() < deadline:
            time.sleep(0.0002)
        held = [d.stop_events[-1][1] for d, m in zip(drivers, marks) if len(d.stop_events) > m]
        latencies.append(max(held) - t0 if len(held) == len(drivers) else float("inf"))
        time.sleep(2 * period_s)
        op.estop(False)
        time.sleep(2 * period_s)
        res = op.call(op.reset_client)
        if not res.success:
            raise RuntimeError(f"estop reset refused after estop false: {res.message}")
        time.sleep(2 * period_s)
    return latencies


def run(args) -> int:
    import rclpy

    cfg = load_cell_config(args.config)
    if args.episodes < 0 or args.measure_stop < 0:
        raise InputError(f"--episodes {args.episodes} / --measure-stop {args.measure_stop}: must be >= 0")
    if args.speed is not None and not args.speed > 0:
        raise InputError(f"--speed {args.speed}: must be > 0")
    baseline = None
    if args.measure_stop:  # benchmark mode: the same loop with no work and no graph, as a baseline
        from handover.runtime.control_loop import PacedLoop

        loop = PacedLoop(cfg.control_period_s)
        loop.run(lambda k, deadline: k < 120)
        baseline = loop.stats.jitter_s()
    context = rclpy.Context()
    rclpy.init(context=context)
    graph = build_graph(cfg, context, args.backend, "all", real_time=args.speed is None, speed=args.speed or 1.0,
                        bundle=args.bundle)
    try:
        graph.start()
        op = Operator(graph)
        pace = "real time" if args.speed is None else f"{args.speed:g}x real time, /clock published"
        print(f"bringup: {len(graph.nodes)} nodes up (backend {args.backend}, {pace}); running {args.episodes} episode(s)",
              flush=True)
        run_episodes(op, args.episodes, args.timeout)
        status = exit_status(op, args.episodes)
        timing = graph.policy.timing()
        print(f"command loop period jitter: {_percentiles_ms(timing['jitter_s'])}; overruns {timing['overruns']}")
        if baseline is not None:
            ratio = np.percentile(timing["jitter_s"], 99) / max(np.percentile(baseline, 99), 1e-9)
            print(f"  baseline, the same paced loop alone before the graph started: {_percentiles_ms(baseline)}; "
                  f"graph/baseline p99 ratio {ratio:.2f}")
        print(f"joint state -> command latency: {_percentiles_ms(timing['state_to_command_s'])}")
        if args.measure_stop:
            if not args.episodes:
                op.release_latch()
            lat = measure_stop(op, graph.drivers, args.measure_stop, cfg.control_period_s)
            print(f"stop latency (estop publish -> last driver holding, {args.measure_stop} stops): {_percentiles_ms(lat)}; "
                  f"one control period is {1e3 * cfg.control_period_s:.1f} ms")
    finally:
        graph.shutdown()
        context.try_shutdown()
    sys.stdout.flush()
    return status
