"""The cell's node graph, built in one process or split over processes by the launch file.

Node sets (``handover node SET``; ``handover bringup`` builds ``all``):

- ``cell``: with the sim and emulated backends, the twin node plus the four joint-group drivers and
  the object tracker (they must share the process that owns the simulation): with ``sim`` they serve
  the twin's devices; with ``emulated`` the real hardware drivers of the config's ``devices:``
  section serve the emulators of those devices, running on the twin in this process
  (:mod:`handover.sim_twin.emulated_cell`);
- ``drivers``: with the real backend, the drivers with the devices of the config's ``devices:``
  section (:mod:`handover.drivers.registry`), each configured before any node starts (a device that
  does not come up ends the process with one line naming it, its address and the vendor's words);
- ``safety``: the safety node; ``policy``: the policy node with the config's bundle;
- ``all``: every node of the chosen backend;
- ``operator``: no cell node; starts ``--episodes`` episodes over ``/handover/start``, prints each
  outcome and exits (what ``episodes:=N`` of the launch file runs).

Under ``use_sim_time`` (the twin not paced to real time) every node gets the parameter, so all
clocks follow ``/clock``.

Backends (:data:`BACKENDS`): ``sim`` (the twin's devices), ``emulated`` (the real drivers against
emulators on the twin, real time only), ``real`` (the hardware). Every backend validates the config's
``devices:`` section with each driver's own config class (:func:`handover.drivers.registry.validate_devices`).

Rates: every joint-group driver publishes its joint states at ``cfg.joint_state_rate_hz``; with the
twin's tracker, the object tracker publishes each camera frame in the physics step it arrives in (the
twin node polls it after every step: ``twin.tracker.rate_hz`` frames/s, each ``twin.tracker.latency_s``
after its capture); with a D435 driver it polls at twice the camera's colour rate.

Clocks: each device gets ``now`` on its own clock (:attr:`handover.drivers.registry.CellDevices.clocks`):
simulation time for the twin's devices (paced to real time), ``time.monotonic`` for the hardware
drivers, the node clock for mirrors.

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

BACKENDS = ("sim", "emulated", "real")
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
    tracker: Optional[object] = None  # the ObjectTrackerNode
    emulated: Optional[object] = None  # the EmulatedCell (backend emulated): its emulators, for fault injection
    closers: list = field(default_factory=list)  # run last by shutdown, after every device is closed
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
        steps += list(self.closers)
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


class _TwinDeviceSet:
    """The twin's devices with the clock every one of them keeps (sim backend)."""

    def __init__(self, devices, clock):
        self.joint_groups, self.tracker, self._devices, self._clock = devices.joint_groups, devices.tracker, devices, clock
        self.tracker_rate_hz = None  # the twin's frame events

    def all(self):
        return self._devices.all()

    def clock(self, device):
        return self._clock


def _start_devices(devices, backend: str) -> None:
    """Configure every device of the registry's set; a device that does not come up is an operator's
    error (one line: the device, where it was looked for, the vendor's words)."""
    from handover.drivers.registry import DeviceStartError, configure_all

    try:
        configure_all(devices)
    except DeviceStartError as exc:
        hint = (" (check its power, cable and address, or set its backend to mirror in devices:)" if backend == "real"
                else "")
        raise InputError(f"backend {backend}: {exc}{hint}") from None


def build_graph(cfg: CellConfig, context, backend: str = "sim", nodes: str = "all", real_time: bool = True,
                speed: float = 1.0, bundle: Optional[Path] = None, seed: int = 0, clock_every: int = 1) -> Graph:
    """Create the nodes of the set ``nodes`` for ``backend`` in ``context`` (not yet spinning).
    ``clock_every``: with the twin not in real time, ``/clock`` every that many physics steps.
    With ``emulated`` and ``real`` the devices are configured here (connected); on any error
    everything made so far is closed again."""
    from handover.drivers.registry import validate_devices

    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if nodes not in NODE_SETS:
        raise InputError(f"node set {nodes!r}: expected one of {', '.join(NODE_SETS)}")
    specs = validate_devices(cfg)  # every backend: a bad devices: section is refused at load time
    if backend == "emulated" and not real_time:
        raise InputError("backend emulated runs in real time only (the emulators and drivers keep the wall clock): "
                         "drop --speed")
    use_sim_time = backend == "sim" and not real_time
    params = _overrides(use_sim_time)
    graph = Graph(cfg, context)
    try:
        # The policy and safety nodes first: loading the bundle's ONNX sessions can keep the GIL for a
        # while, which must not happen once devices stream (an Allegro PD thread starved for longer
        # than its position timeout faults the hand). The cell's devices are connected last.
        if nodes in ("all", "policy"):
            from handover.runtime.policy_networks import PolicyNetworks
            from handover.runtime.policy_node import PolicyNode

            bundle = bundle or cfg.models.bundle
            if bundle is None:
                raise InputError(f"{cfg.source}: models.bundle is null and no --bundle given: the policy node needs a bundle")
            graph.policy = PolicyNode(cfg, PolicyNetworks.load(bundle), context=context, parameter_overrides=params)
            graph.nodes.append(graph.policy)
        if nodes in ("all", "safety"):
            from handover.runtime.safety_node import SafetyNode

            graph.nodes.append(SafetyNode(cfg, context=context, parameter_overrides=params))
        if nodes in ("all", "cell", "drivers"):
            _build_cell(graph, cfg, context, backend, nodes, specs, params, real_time, speed, seed, clock_every)
    except BaseException:
        _discard(graph)
        raise
    return graph


def _discard(graph: Graph) -> None:
    """Undo a graph that was not started: destroy its nodes, close its devices and emulators."""
    steps = [n.destroy_node for n in graph.nodes]
    steps += [d.close for d in (graph.devices.all() if graph.devices is not None else [])]
    steps += list(graph.closers)
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass


def _build_cell(graph: Graph, cfg: CellConfig, context, backend: str, nodes: str, specs, params, real_time: bool,
                speed: float, seed: int, clock_every: int) -> None:
    from handover.drivers.joint_group_node import JointGroupNode
    from handover.drivers.object_tracker_node import ObjectTrackerNode
    from handover.drivers.registry import build_devices

    if backend in ("sim", "emulated"):
        if nodes == "drivers":
            raise InputError(f"node set 'drivers' is for backend real; with backend {backend} use 'cell'")
        from handover.sim_twin.twin_node import TwinNode

        graph.twin = TwinNode(cfg, context=context, real_time=real_time, speed=speed, seed=seed,
                              clock_every=clock_every)
        graph.nodes.append(graph.twin)
        # the twin's devices keep simulation time; paced to real time, the nodes' clocks are wall time
        twin = graph.twin
        twin_clock = (lambda: twin.sim_time) if real_time else None
        if backend == "sim":
            devices = _TwinDeviceSet(twin.devices, twin_clock)
        else:
            from handover.sim_twin.emulated_cell import EmulatedCell

            graph.emulated = EmulatedCell(twin, cfg, specs)
            graph.closers.append(graph.emulated.close)
            try:
                graph.emulated.start()
            except OSError as exc:  # e.g. port 502 without root: an operator's error, one line
                raise InputError(f"backend emulated: {exc}") from None
            devices = build_devices(cfg, graph.emulated.specs, twin=twin.devices, twin_clock=twin_clock,
                                    extra=graph.emulated.extra)
    else:
        if nodes == "cell":
            raise InputError("node set 'cell' is for backends sim and emulated; with hardware use 'drivers'")
        devices = build_devices(cfg, specs)
    graph.devices = devices
    if backend != "sim":
        _start_devices(devices, backend)
    for (side, group), device in devices.joint_groups.items():
        node = JointGroupNode(device, cfg, side, group, context=context, parameter_overrides=params,
                              device_clock=devices.clock(device), state_rate_hz=cfg.joint_state_rate_hz)
        graph.drivers.append(node)
        graph.nodes.append(node)
    # the twin's tracker: frames are published in the physics step they arrive in (module docstring)
    frame_events = devices.tracker_rate_hz is None and graph.twin is not None
    tracker = ObjectTrackerNode(devices.tracker, cfg, context=context, parameter_overrides=params,
                                device_clock=devices.clock(devices.tracker), frame_events=frame_events,
                                rate_hz=devices.tracker_rate_hz)
    if frame_events:
        graph.twin.add_step_listener(lambda t: tracker.poll())
    graph.tracker = tracker
    graph.nodes.append(tracker)

def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="sim: the MuJoCo twin (default); emulated: the real drivers against emulated devices on the "
                        "twin; real: the hardware of the config's devices: section")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="cell config (default: %(default)s)")
    p.add_argument("--bundle", type=Path, default=None, help="policy bundle (default: the config's models.bundle)")
    p.add_argument("--speed", type=positive_float, default=None, metavar="X",
                   help="run the twin X times faster than real time, publishing /clock; nodes use sim time "
                        "(default: paced to real time)")
