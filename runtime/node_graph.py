"""The cell's node graph, built in one process or split over processes by the launch file.

Node sets (``handover node SET``; ``handover bringup`` builds ``all``):

- ``cell``: with the twin backend, the twin node plus the four joint-group drivers and the object
  tracker, all serving the twin's devices (they must share the process that owns the simulation);
- ``drivers``: with the real backend, the drivers with their own hardware devices;
- ``safety``: the safety node; ``policy``: the policy node with the config's bundle;
- ``all``: every node of the chosen backend;
- ``operator``: no cell node; starts ``--episodes`` episodes over ``/handover/start``, prints each
  outcome and exits (what ``episodes:=N`` of the launch file runs).

Under ``use_sim_time`` (the twin not paced to real time) every node gets the parameter, so all
clocks follow ``/clock``.

Rates: every joint-group driver publishes its joint states at ``cfg.joint_state_rate_hz``; with the
twin, the object tracker publishes each camera frame in the physics step it arrives in (the twin
node polls it after every step: ``twin.tracker.rate_hz`` frames/s, each ``twin.tracker.latency_s``
after its capture); with hardware it polls at the tracker's frame rate.

Executor: :func:`make_executor`, one per process, spun by one thread (:meth:`Graph.start`).
"""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, CellConfig
from handover.runtime.cli_values import positive_float
from handover.runtime.errors import InputError

BACKENDS = ("sim", "real")
NODE_SETS = ("all", "cell", "drivers", "safety", "policy", "operator")


def make_executor(context):
    """``rclpy.experimental.EventsExecutor`` where this rclpy has it (its event queue and timers are
    C++: several times less CPU per delivered message than the Python executors), else the
    ``SingleThreadedExecutor``. Both are single-threaded: callback groups serialize nothing more.
    The EventsExecutor does not support guard conditions (``node.create_guard_condition``): the
    cell's nodes use none."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=context)
    # Its constructor enables faulthandler on sys.stderr, which needs a real file descriptor; where
    # stderr was replaced (pytest's capture, a GUI) give it the process's own stderr for that.
    saved = sys.stderr
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        sys.stderr = sys.__stderr__
    try:
        return EventsExecutor(context=context)
    finally:
        sys.stderr = saved


@dataclass
class Graph:
    """The nodes of one process and the executor that spins them."""

    cfg: CellConfig
    context: object
    nodes: list = field(default_factory=list)
    twin: Optional[object] = None  # the TwinNode, with the sim backend
    devices: Optional[object] = None  # the devices the drivers serve (closed by shutdown); .all() lists them
    policy: Optional[object] = None  # the PolicyNode
    drivers: list = field(default_factory=list)
    executor: Optional[object] = None
    _spin: Optional[threading.Thread] = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Spin all nodes in one executor thread (:func:`make_executor`), then start the twin's
        physics and the policy's control loop (each in its own thread). Single-threaded on purpose:
        every callback is short, and in one Python process rclpy's multi-threaded executor delivered
        60 Hz joint states with gaps up to 250 ms here (single-threaded: 35 ms).

        The thread calls ``spin_once(timeout_sec=0.05)`` in a loop, never ``spin()``: the
        EventsExecutor's ``spin()`` keeps the GIL while it waits, so every other thread of the
        process (the twin's physics, the policy's control loop) would stop; ``spin_once`` releases
        it while waiting. Nodes may be added while it spins."""
        self.executor = make_executor(self.context)
        for node in self.nodes:
            self.executor.add_node(node)
        self._spin = threading.Thread(target=self._spin_until_shutdown, name="executor", daemon=True)
        self._spin.start()
        if self.twin is not None:
            self.twin.start()
        if self.policy is not None:
            self.policy.start_loop()

    def _spin_until_shutdown(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok() and not self._stopping.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass
        except Exception:  # noqa: BLE001 - a shutdown racing spin_once may raise; only then is it expected
            if self.context.ok() and not self._stopping.is_set():
                raise

    def shutdown(self) -> None:
        """Stop the policy's loop (no command after it), make every driver hold its measured
        position (the last command any device gets), stop the twin, let the executor thread finish
        its callback (it returns within the ``spin_once`` timeout, 0.05 s), shut the executor down,
        destroy the nodes, then close every device. Each step runs even if an earlier one failed."""
        steps = []
        if self.policy is not None:
            steps.append(self.policy.stop_loop)
        steps += [lambda d=d: d.hold("the graph is shutting down") for d in self.drivers]
        if self.twin is not None:
            steps.append(self.twin.stop)
        steps += [self._stopping.set, lambda: self._spin is not None and self._spin.join(2.0),
                  lambda: self.executor is not None and self.executor.shutdown(timeout_sec=2.0)]
        steps += [n.destroy_node for n in self.nodes]
        steps += [d.close for d in (self.devices.all() if self.devices is not None else [])]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the rest must still hold, stop and close
                errors.append(exc)
        if errors:
            raise errors[0]


def _overrides(use_sim_time: bool) -> list:
    from rclpy.parameter import Parameter

    return [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if use_sim_time else []


def _hardware_devices(cfg: CellConfig):
    """The real arms, hands and camera. Their drivers (xArm6 over xarm-python-sdk, Allegro over CAN,
    D435 over pyrealsense2) are not written yet; say so instead of pretending."""
    raise InputError("backend real: the hardware drivers (xArm6, Allegro CAN, D435) are not implemented yet; "
                     "use backend sim (the MuJoCo twin behind the same device interfaces)")


def build_graph(cfg: CellConfig, context, backend: str = "sim", nodes: str = "all", real_time: bool = True,
                speed: float = 1.0, bundle: Optional[Path] = None, seed: int = 0, clock_every: int = 1) -> Graph:
    """Create the nodes of the set ``nodes`` for ``backend`` in ``context`` (not yet spinning).
    ``clock_every``: with the twin not in real time, ``/clock`` every that many physics steps."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if nodes not in NODE_SETS:
        raise InputError(f"node set {nodes!r}: expected one of {', '.join(NODE_SETS)}")
    use_sim_time = backend == "sim" and not real_time
    params = _overrides(use_sim_time)
    graph = Graph(cfg, context)
    if nodes in ("all", "cell", "drivers"):
        from handover.drivers.joint_group_node import JointGroupNode
        from handover.drivers.object_tracker_node import ObjectTrackerNode

        if backend == "sim":
            if nodes == "drivers":
                raise InputError("node set 'drivers' is for backend real; with the twin use 'cell'")
            from handover.sim_twin.twin_node import TwinNode

            graph.twin = TwinNode(cfg, context=context, real_time=real_time, speed=speed, seed=seed,
                                  clock_every=clock_every)
            graph.nodes.append(graph.twin)
            devices = graph.twin.devices
            # the twin's devices keep simulation time; paced to real time, the nodes' clocks are wall time
            twin = graph.twin
            device_clock = (lambda: twin.sim_time) if real_time else None
        else:
            if nodes == "cell":
                raise InputError("node set 'cell' is for backend sim; with hardware use 'drivers'")
            devices, device_clock = _hardware_devices(cfg), None
        graph.devices = devices
        for (side, group), device in devices.joint_groups.items():
            node = JointGroupNode(device, cfg, side, group, context=context, parameter_overrides=params,
                                  device_clock=device_clock, state_rate_hz=cfg.joint_state_rate_hz)
            graph.drivers.append(node)
            graph.nodes.append(node)
        # with the twin, frames are published in the physics step they arrive in (module docstring)
        tracker = ObjectTrackerNode(devices.tracker, cfg, context=context, parameter_overrides=params,
                                    device_clock=device_clock, frame_events=graph.twin is not None)
        if graph.twin is not None:
            graph.twin.add_step_listener(lambda t: tracker.poll())
        graph.nodes.append(tracker)
    if nodes in ("all", "safety"):
        from handover.runtime.safety_node import SafetyNode

        graph.nodes.append(SafetyNode(cfg, context=context, parameter_overrides=params))
    if nodes in ("all", "policy"):
        from handover.runtime.policy_networks import PolicyNetworks
        from handover.runtime.policy_node import PolicyNode

        bundle = bundle or cfg.models.bundle
        if bundle is None:
            raise InputError(f"{cfg.source}: models.bundle is null and no --bundle given: the policy node needs a bundle")
        graph.policy = PolicyNode(cfg, PolicyNetworks.load(bundle), context=context, parameter_overrides=params)
        graph.nodes.append(graph.policy)
    return graph


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="sim", help="sim: the MuJoCo twin (default); real: the hardware")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="cell config (default: %(default)s)")
    p.add_argument("--bundle", type=Path, default=None, help="policy bundle (default: the config's models.bundle)")
    p.add_argument("--speed", type=positive_float, default=None, metavar="X",
                   help="run the twin X times faster than real time, publishing /clock; nodes use sim time "
                        "(default: paced to real time)")
