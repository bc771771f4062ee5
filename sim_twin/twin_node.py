"""The twin node (``twin``): the MuJoCo twin as the cell's hardware, for the driver and tracker nodes.

With the twin backend this node owns the simulation; the joint-group and tracker nodes serve its
devices (:attr:`TwinNode.devices`, a :class:`~handover.sim_twin.devices.TwinDevices`) in the same
process, exactly as they serve the hardware's. Their lifecycle (configure, activate, stop) is the
driver nodes' business; this node does not touch it.

Threads: the physics thread advances the twin ONE physics step (``cfg.twin.timestep_s``, 1/120 s)
per tick of a :class:`~handover.runtime.control_loop.PacedLoop` on the wall clock (period
``timestep_s / speed``), like the hardware, whose servo and PD loops run far faster than the policy:
a joint group's newest command (written to the actuators' PD targets by the driver node, from an
executor thread) acts from the next physics step on, never waiting for a control-period boundary.
In real time, physics steps whose deadlines were missed are stepped at the next tick, back to back,
so simulation time never falls behind the wall clock (counted in :attr:`TwinNode.caught_up`).
After every tick the step listeners (:meth:`TwinNode.add_step_listener`) are called in the physics
thread, outside the simulation lock, with the simulation time: the object tracker node publishes a
camera frame there as soon as it has arrived (capture stamp + latency), as a camera driver's own
thread would. Every access to the simulation goes through one lock (:class:`LockedTwin`).

Time: the devices' clock is simulation time (s). ``real_time=True`` paces the simulation to the
wall clock (``speed`` 1) and every node uses its wall clock. ``real_time=False`` runs it ``speed``
times real time and publishes the simulation time on ``/clock`` every ``clock_every`` physics steps
(default 1: every step, so that sim-time timers up to the physics rate fire on time) and once at
start; the other nodes must then run with ``use_sim_time=True`` so their clocks, loops and stamps
follow the simulation.

Interfaces: service ``/handover/twin/place_object`` (Trigger: the object back at
``cfg.object.start_position``, at rest, like an operator would place it); on
``/handover/policy/episode_done`` (UInt32) the final state is judged
(:func:`handover.sim_twin.success.judge`) and published on ``/handover/twin/outcome`` as JSON
``{"episode": n, "success": bool, "reason": str, "object_position": [x, y, z]}`` (world, m);
``/diagnostics``: ``running``.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String, UInt32
from std_srvs.srv import Trigger

from handover.runtime.cell_config import CellConfig
from handover.runtime.control_loop import PacedLoop, WallClock
from handover.runtime.ros_interface import NodeState, Topics, diagnostics_msg, qos_events, qos_sensor, s_to_stamp
from handover.sim_twin.devices import TwinDevices
from handover.sim_twin.success import judge
from handover.sim_twin.twin import Twin

NODE_NAME = "twin"


class _LockedCamera:
    """The twin's camera model with :meth:`latest` under the simulation lock (the physics thread
    appends frames while a tracker node reads them). The frame is chosen at the simulation time,
    whatever ``now`` the caller passes: a driver node's clock is wall time when the twin runs in
    real time, and the camera's stamps and latency are simulation time."""

    def __init__(self, twin: Twin, lock: threading.RLock):
        self._twin = twin
        self._camera = twin.camera
        self._lock = lock

    def latest(self, now: float):
        with self._lock:
            return self._camera.latest(self._twin.time)

    def __getattr__(self, name):
        return getattr(self._camera, name)


class LockedTwin:
    """A :class:`~handover.sim_twin.devices.SimBackend` over a :class:`Twin`: every call under ``lock``."""

    def __init__(self, twin: Twin, lock: threading.RLock):
        self.twin = twin
        self.lock = lock
        self.name = twin.name
        self.cfg = twin.cfg
        self.provides_effort = twin.provides_effort
        self.camera = _LockedCamera(twin, lock)

    @property
    def time(self) -> float:
        with self.lock:
            return self.twin.time

    def read_joints(self, index: np.ndarray):
        with self.lock:
            return self.twin.read_joints(index)

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        with self.lock:
            self.twin.set_targets(index, targets)


class TwinNode(Node):
    """The twin as a node. ``seed``: the tracker noise seed. ``speed``: simulated seconds per wall
    second (> 0; used with ``real_time=False``, where ``/clock`` is published every ``clock_every``
    physics steps, an int >= 1). Call :meth:`start` to run the physics, :meth:`stop` (or
    ``destroy_node``) to end it.

    Public for tests and benchmarks: :attr:`steps` (physics steps since :meth:`start`),
    :attr:`caught_up` (of those, stepped back to back after a late wake-up), :attr:`timestep_s`
    (one physics step, s of simulation time), :attr:`clock_published` (``/clock`` messages)."""

    def __init__(self, cfg: CellConfig, *, context=None, real_time: bool = True, speed: float = 1.0, seed: int = 0,
                 clock_every: int = 1, parameter_overrides=None):
        super().__init__(NODE_NAME, context=context, parameter_overrides=parameter_overrides)
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
            raise ValueError(f"TwinNode: speed must be a positive finite factor of real time, got {speed!r}")
        if real_time and speed != 1.0:
            raise ValueError(f"TwinNode: speed {speed!r} needs real_time=False (real time is speed 1)")
        if isinstance(clock_every, bool) or not isinstance(clock_every, int) or clock_every < 1:
            raise ValueError(f"TwinNode: clock_every must be a whole number of physics steps >= 1, got {clock_every!r}")
        self.cfg = cfg
        self.topics = Topics.from_config(cfg)
        self.real_time = bool(real_time)
        self.speed = float(speed)
        self.lock = threading.RLock()
        self.twin = Twin(cfg, seed=seed)  # constructed reset: reset pose, object at its start, at rest
        self.backend = LockedTwin(self.twin, self.lock)
        self.devices = TwinDevices.create(self.backend)
        self.outcomes: list[dict] = []
        self.timestep_s = float(self.twin.model.opt.timestep)  # one physics step, s (simulation time)
        self.clock_every = clock_every
        self.steps = 0  # physics steps since start()
        self.caught_up = 0  # of those, stepped late to catch up with the wall clock (real time only)
        self.clock_published = 0
        self._step_listeners: list[Callable[[float], None]] = []

        group = MutuallyExclusiveCallbackGroup()
        self._place_srv = self.create_service(Trigger, self.topics.twin_place_object, self._on_place, callback_group=group)
        self._done_sub = self.create_subscription(UInt32, self.topics.episode_done, self._on_episode_done, qos_events(),
                                                  callback_group=group)
        self._outcome_pub = self.create_publisher(String, self.topics.twin_outcome, qos_events())
        self._diag_pub = self.create_publisher(DiagnosticArray, self.topics.diagnostics, qos_events())
        self._clock_pub = None if self.real_time else self.create_publisher(Clock, "/clock", qos_sensor())
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, callback_group=group)
        self._loop = PacedLoop(self.timestep_s / self.speed, WallClock())
        self._started = False
        self._publish_clock(self.twin.time)
        self._publish_diagnostics()

    # -- physics ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the physics thread (once)."""
        if self._started:
            raise RuntimeError("TwinNode.start: the physics thread was already started")
        self._started = True
        self._loop.start(self._tick, name="twin-physics")

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the physics thread for good."""
        self._loop.stop(timeout)

    def destroy_node(self):
        self.stop()
        return super().destroy_node()

    def add_step_listener(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(sim_time_s)`` after every physics tick, in the physics thread, outside the
        simulation lock (add listeners before :meth:`start`). It must be short: it delays the next
        physics step. An exception is logged and the physics go on."""
        self._step_listeners.append(listener)

    def _tick(self, k: int, deadline: float) -> None:
        # In real time the simulation must keep up with the wall clock the other nodes use: after a
        # late wake-up (the loop skips missed deadlines) the missed physics steps are stepped now,
        # back to back. Under /clock everyone follows the simulation, so a late tick just slows it.
        n = max(1, k + 1 - self.steps) if self.real_time else 1
        with self.lock:
            t = self.twin.advance(n * self.timestep_s)
        before = self.steps
        self.steps += n
        self.caught_up += n - 1
        if self.steps // self.clock_every != before // self.clock_every:
            self._publish_clock(t)
        for listener in self._step_listeners:
            try:
                listener(t)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the physics
                self.get_logger().error(f"step listener {listener!r} failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=1.0)

    def _publish_clock(self, t: float) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=s_to_stamp(t)))
            self.clock_published += 1

    # -- services and events ----------------------------------------------------------------------

    def _on_place(self, request, response):
        start = np.asarray(self.cfg.object.start_position, dtype=float)
        with self.lock:
            self.twin.place_object(self.twin.params, start)  # this episode keeps the twin's current parameters
            t = self.twin.time
        response.success = True
        response.message = (f"object placed at rest at {start.round(4).tolist()} m (world, cfg.object.start_position) "
                            f"at sim time {t:.3f} s")
        self.get_logger().info(response.message)
        return response

    def _on_episode_done(self, msg) -> None:
        with self.lock:
            outcome = judge(self.twin)
            t = self.twin.time
        record = {"episode": int(msg.data), "success": bool(outcome.success), "reason": outcome.reason,
                  "object_position": [float(v) for v in outcome.object_position]}
        self.outcomes.append(record)
        self._outcome_pub.publish(String(data=json.dumps(record)))
        self.get_logger().info(f"episode {msg.data} judged at sim time {t:.3f} s: "
                               f"{'success' if outcome.success else 'failure'}: {outcome.reason}")
        self._publish_diagnostics()

    # -- diagnostics ------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        stats = self._loop.stats
        pace = "real time" if self.real_time else f"{self.speed:g}x real time, /clock published"
        values = {"sim_time_s": f"{self.backend.time:.3f}", "physics_steps": self.steps, "overruns": stats.overruns,
                  "caught_up": self.caught_up,
                  "skipped": stats.skipped, "episodes_judged": len(self.outcomes),
                  "successes": sum(o["success"] for o in self.outcomes)}
        self._diag_pub.publish(diagnostics_msg(NODE_NAME, NodeState.RUNNING, self.get_clock().now().nanoseconds * 1e-9,
                                               pace, values))

    @property
    def sim_time(self) -> float:
        """The simulation time, s."""
        return self.backend.time
