"""``handover record``: the cell's topics into a rosbag2 bag in MCAP storage.

The bag is a folder (``BAG/metadata.yaml`` and ``BAG/BAG.mcap``), written with the ``rosbags``
library (rosbag2 format version 9, MCAP storage, CDR messages as they came over DDS, standard
message types): ``ros2 bag info/play``, Foxglove and the ``mcap`` tools read it.

Recorded topics (:func:`record_topics`, names from the cell config): the four joint states and the
four joint commands, the object position, the predicted goal, the estop and the safety latch,
episode start / end / done, the twin's outcome, ``/diagnostics``, ``/clock`` (only under sim time)
and ``/handover/policy/step`` (:mod:`handover.runtime.step_topic`: what each policy step saw and did;
recorded when the policy node publishes it). A message's log time is its arrival at the recorder on
the recorder node's clock (ns; sim time under ``use_sim_time``); the replay uses the headers' stamps.

Crash safety: the MCAP writer keeps messages in an in-memory chunk; :class:`BagWriter` closes the
chunk, flushes and fsyncs the file at least every ``flush_period_s`` (default 0.5 s, wall clock),
from its own thread. A recorder killed (SIGKILL, power loss) loses at most the messages of the last
period; the MCAP file then has no summary and footer and there is no ``metadata.yaml``: the replay
(:mod:`handover.sim_twin.replay_bag`) reads such a bag record by record and says so, and
``ros2 bag reindex BAG`` rebuilds ``metadata.yaml`` for the ROS tools. A clean stop (Ctrl-C,
SIGTERM, ``--duration``) writes the summary and ``metadata.yaml``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from handover.runtime.errors import InputError
from handover.runtime.step_topic import POLICY_STEP_TOPIC

FLUSH_PERIOD_S = 0.5  # wall s between chunk flushes: a crash loses at most this much (+ the write itself)

# ROS type names as rosbag2 stores them -> (python module, class)
_TYPES = {
    "sensor_msgs/msg/JointState": ("sensor_msgs.msg", "JointState"),
    "geometry_msgs/msg/PointStamped": ("geometry_msgs.msg", "PointStamped"),
    "std_msgs/msg/Bool": ("std_msgs.msg", "Bool"),
    "std_msgs/msg/String": ("std_msgs.msg", "String"),
    "std_msgs/msg/UInt32": ("std_msgs.msg", "UInt32"),
    "diagnostic_msgs/msg/DiagnosticArray": ("diagnostic_msgs.msg", "DiagnosticArray"),
    "rosgraph_msgs/msg/Clock": ("rosgraph_msgs.msg", "Clock"),
}


@dataclass(frozen=True)
class RecordTopic:
    """One recorded topic: ``name``, ``msgtype`` (``pkg/msg/Type``), ``qos`` one of sensor, command,
    latched, events, start (the QoS helpers of :mod:`handover.runtime.ros_interface`)."""

    name: str
    msgtype: str
    qos: str


def record_topics(cfg, sim_time: bool = False) -> list[RecordTopic]:
    """The cell's topics to record for config ``cfg`` (``/clock`` too with ``sim_time``)."""
    from handover.runtime.ros_interface import Topics

    t = Topics.from_config(cfg)
    js, ps, s = "sensor_msgs/msg/JointState", "geometry_msgs/msg/PointStamped", "std_msgs/msg/String"
    out = [RecordTopic(n, js, "sensor") for n in t.joint_states.values()]
    out += [RecordTopic(n, js, "command") for n in t.joint_commands.values()]
    out += [RecordTopic(t.object_position, ps, "sensor"), RecordTopic(t.predicted_goal, ps, "command"),
            RecordTopic(t.estop, "std_msgs/msg/Bool", "latched"), RecordTopic(t.safety_latched, "std_msgs/msg/Bool", "latched"),
            RecordTopic(t.episode_start, s, "start"), RecordTopic(t.episode_end, s, "events"),
            RecordTopic(t.episode_done, "std_msgs/msg/UInt32", "events"), RecordTopic(t.twin_outcome, s, "events"),
            RecordTopic(t.diagnostics, "diagnostic_msgs/msg/DiagnosticArray", "events"),
            RecordTopic(POLICY_STEP_TOPIC, js, "command")]
    if sim_time:
        out.append(RecordTopic("/clock", "rosgraph_msgs/msg/Clock", "sensor"))
    return out


class BagWriter:
    """A rosbag2 MCAP bag being written: topics added up front, raw CDR messages written from any
    thread, chunks flushed to disk every ``flush_period_s`` wall seconds by a background thread.
    ``path``: the bag folder (must not exist)."""

    def __init__(self, path, topics: list[RecordTopic], flush_period_s: float = FLUSH_PERIOD_S):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise InputError(f"{self.path}: the bag folder exists already; recording never overwrites (choose a new name)")
        parent = self.path.parent
        if not parent.is_dir():
            raise InputError(f"{self.path}: its folder {parent} does not exist")
        if not flush_period_s > 0:
            raise InputError(f"flush period {flush_period_s}: must be > 0 s")
        self.flush_period_s = float(flush_period_s)
        store = get_typestore(Stores.ROS2_JAZZY)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conns = {tp.name: self._writer.add_connection(tp.name, tp.msgtype, typestore=store) for tp in topics}
        self.counts = {tp.name: 0 for tp in topics}
        self._lock = threading.Lock()
        self._pending = 0  # messages in the open chunk
        self._closed = False
        self.last_flush = time.monotonic()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="bag-flush", daemon=True)
        self._flusher.start()

    @property
    def mcap_path(self) -> Path:
        return self.path / f"{self.path.name}.mcap"

    def write(self, topic: str, log_time_ns: int, raw: bytes) -> None:
        """One serialized (CDR) message of ``topic`` received at ``log_time_ns``."""
        with self._lock:
            if self._closed:
                return
            self._writer.write(self._conns[topic], int(log_time_ns), raw)
            self.counts[topic] += 1
            self._pending += 1

    def flush(self) -> None:
        """Close the open chunk (if it holds messages), write it and fsync the file."""
        with self._lock:
            if self._closed:
                return
            storage = self._writer.storage
            if self._pending:
                storage.close_chunk()  # rosbags 0.11.9 McapWriter: the chunk and its message indexes
                self._pending = 0
            storage.bio.flush()
            os.fsync(storage.bio.fileno())
            self.last_flush = time.monotonic()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_period_s):
            self.flush()

    def close(self) -> None:
        """Stop flushing, write the summary, the footer and ``metadata.yaml``."""
        self._stop.set()
        self._flusher.join(timeout=5.0)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()


class RecorderNode:
    """An rclpy node ``recorder`` subscribing (raw) to ``topics`` and writing them to ``writer``.
    QoS per topic as the publishers offer it (best effort for sensors, transient local for the stop
    and its latch, so the current latch state is in the bag from the start)."""

    def __init__(self, writer: BagWriter, topics: list[RecordTopic], context=None, parameter_overrides=None):
        import importlib

        import rclpy

        from handover.runtime import ros_interface as ri

        qos = {"sensor": ri.qos_sensor, "command": ri.qos_command, "latched": lambda: ri.qos_latched(10),
               "events": ri.qos_events, "start": ri.qos_episode_start}
        self.writer = writer
        self.node = rclpy.create_node("recorder", context=context, parameter_overrides=parameter_overrides or [])
        clock = self.node.get_clock()
        for tp in topics:
            module, cls = _TYPES[tp.msgtype]
            msg_type = getattr(importlib.import_module(module), cls)
            q = qos[tp.qos]()
            if tp.qos in ("sensor", "command"):
                q.depth = 100  # keep up with bursts; the recorder drops nothing it can help

            def cb(raw, name=tp.name):
                writer.write(name, clock.now().nanoseconds, raw)

            self.node.create_subscription(msg_type, tp.name, cb, q, raw=True)


# ------------------------------------------------------------------------------------------------
# handover record
# ------------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from handover.runtime.cell_config import DEFAULT_CONFIG_PATH
    from handover.runtime.cli_values import positive_float

    p = sub.add_parser("record", help="record the cell's topics into a rosbag2 MCAP bag (until Ctrl-C)",
                       description="Record the cell's topics (joint states and commands, object, predicted goal, "
                                   "stop and latch, episode events, twin outcome, diagnostics, policy steps) into "
                                   "a rosbag2 bag folder in MCAP storage. Runs until Ctrl-C / SIGTERM or --duration; "
                                   "a crash loses at most the last --flush seconds.")
    p.add_argument("bag", type=Path, help="the bag folder to create (must not exist)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="cell config (default: %(default)s)")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S", help="stop after S wall seconds")
    p.add_argument("--flush", type=positive_float, default=FLUSH_PERIOD_S, metavar="S",
                   help="write the open chunk to disk every S wall seconds (default: %(default)s)")
    p.add_argument("--use-sim-time", action="store_true", help="log times on /clock (the twin with --speed); records /clock")
    p.set_defaults(func=run)


@dataclass
class Recording:
    """A recorder running in its own rclpy context and executor thread (for the CLI and tests)."""

    writer: BagWriter
    context: object
    node: RecorderNode
    executor: object = None
    _thread: Optional[threading.Thread] = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def start(cfg, path, flush_period_s: float = FLUSH_PERIOD_S, context=None, sim_time: bool = False) -> "Recording":
        """Start recording ``cfg``'s topics into the new bag ``path``. With ``context`` (an rclpy
        context already initialised, e.g. a graph's) the node joins it, else its own is made."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        own = context is None
        if own:
            context = rclpy.Context()
            rclpy.init(context=context)
        topics = record_topics(cfg, sim_time)
        writer = BagWriter(path, topics, flush_period_s)
        params = []
        if sim_time:
            from rclpy.parameter import Parameter

            params = [Parameter("use_sim_time", Parameter.Type.BOOL, True)]
        node = RecorderNode(writer, topics, context=context, parameter_overrides=params)
        rec = Recording(writer, context if own else None, node)
        rec.executor = SingleThreadedExecutor(context=context)
        rec.executor.add_node(node.node)
        rec._thread = threading.Thread(target=rec._spin, name="recorder", daemon=True)
        rec._thread.start()
        return rec

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - a shutdown racing spin_once
                if not self._stop.is_set():
                    raise

    def stop(self) -> None:
        """Stop the subscriptions, close the bag (summary, footer, metadata.yaml)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.node.destroy_node()
        finally:
            self.writer.close()
            if self.context is not None:
                self.context.try_shutdown()


def run(args) -> int:
    from handover.runtime.cell_config import load_cell_config

    cfg = load_cell_config(args.config)
    rec = Recording.start(cfg, args.bag, args.flush, sim_time=args.use_sim_time)
    print(f"record: writing {len(rec.writer.counts)} topics to {args.bag} (MCAP; flushed every {args.flush:g} s); "
          f"Ctrl-C to stop", flush=True)
    t0 = time.monotonic()
    try:
        while args.duration is None or time.monotonic() - t0 < args.duration:
            time.sleep(0.1)
    finally:
        rec.stop()
        n = sum(rec.writer.counts.values())
        print(f"record: {n} messages in {time.monotonic() - t0:.1f} s written to {args.bag}", flush=True)
    return 0
