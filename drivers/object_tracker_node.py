"""The object tracker node: an :class:`ObjectTracker` published on ``/handover/object/position``.

Node name ``object_tracker``. :meth:`ObjectTrackerNode.poll` reads the device with ``now`` = the
node clock in seconds (sim time under ``use_sim_time``) and publishes every *new* valid observation
once as ``geometry_msgs/PointStamped``: the object centre in the ``world`` frame (m), stamped with
the observation's capture time (s, not its arrival). Frames in which the object was not found are
not published (counted only); nothing is ever invented. Who polls:

- by default a timer at ``rate_hz`` (default: the twin tracker's frame rate, ``twin.tracker.rate_hz``
  of the cell config; a hardware bring-up passes the camera's), in the executor;
- with ``frame_events=True`` no timer: the device's owner calls :meth:`poll` whenever a frame may
  have arrived, always from one and the same thread (the twin node after every physics step, so a
  frame is published in the physics step it arrives in: at the camera's rate, with its latency, as
  a camera driver's frame callback would).

``/diagnostics`` (1 Hz wall time and on every change): ``running``, or ``fault`` with the device's
message while reads fail. The safety stop does not stop a sensor: the tracker keeps publishing and
reports ``running`` while the stop is latched (the drivers and the policy node are what stop).
Time: the device's ``now`` is seconds on the node clock, unless ``device_clock`` is given (a
callable returning the device's own time, s; e.g. the twin's simulation time while the twin runs in
real time without ``/clock``): then the capture time is moved to the node clock by its age,
``stamp = node now - (device now - capture time)``.

The node never closes the device: its owner does.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from handover.drivers.device import DeviceError, Lifecycle
from handover.drivers.joint_group_node import DIAGNOSTICS_PERIOD_S, checked_rate
from handover.drivers.object_tracker import ObjectTracker
from handover.runtime.cell_config import CellConfig
from handover.runtime.ros_interface import NodeState, Topics, diagnostics_msg, point_msg, qos_events, qos_sensor


class ObjectTrackerNode(Node):
    """Wires one :class:`ObjectTracker` to ``/handover/object/position`` and ``/diagnostics``.

    Public for tests: :attr:`state`, :attr:`detail`, :attr:`published` (observations published),
    :attr:`invalid_frames` (new frames without the object).
    """

    def __init__(self, device: ObjectTracker, cfg: CellConfig, *, context=None, rate_hz: Optional[float] = None,
                 parameter_overrides=None, device_clock: Optional[Callable[[], float]] = None,
                 frame_events: bool = False):
        if rate_hz is None:
            rate = checked_rate(cfg.twin.tracker.rate_hz, f"{cfg.source}: twin.tracker.rate_hz")
        else:
            rate = checked_rate(rate_hz, "ObjectTrackerNode: rate_hz")
        super().__init__("object_tracker", context=context, parameter_overrides=parameter_overrides)
        self.device = device
        self.device_clock = device_clock
        self.topics = Topics.from_config(cfg)
        self.period_s = 1.0 / rate
        self.published = 0
        self.invalid_frames = 0
        self._last_stamp = -np.inf  # capture time of the newest observation seen, s
        self._status = (NodeState.RUNNING, "publishing new observations")

        self._diag_pub = self.create_publisher(DiagnosticArray, self.topics.diagnostics, qos_events())
        self._pub = self.create_publisher(PointStamped, self.topics.object_position, qos_sensor())
        try:  # a tracker only needs to be readable; activate it like every device of the cell anyway
            if device.state is Lifecycle.UNCONFIGURED:
                device.configure()
            if device.state is Lifecycle.INACTIVE:
                device.activate()
        except DeviceError as exc:
            self._status = (NodeState.FAULT, str(exc))
            self.get_logger().error(f"object_tracker: {exc}")
        # one (default, mutually exclusive) callback group: the timers never overlap
        self.frame_events = bool(frame_events)
        self._timer = None if self.frame_events else self.create_timer(self.period_s, self.poll)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._publish_diagnostics()

    @property
    def state(self) -> NodeState:
        return self._status[0]

    @property
    def detail(self) -> str:
        return self._status[1]

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def poll(self) -> None:
        """Read the device; publish its newest observation if it is new and valid (see the module
        docstring). Called by the timer, or with ``frame_events`` by the device's owner."""
        now = self._now()
        device_now = now if self.device_clock is None else self.device_clock()
        try:
            obs = self.device.read(device_now)
        except DeviceError as exc:
            reason = self.device.fault_reason
            if not (self.state is NodeState.FAULT and reason and reason in self.detail):  # keep the first message
                self._set(NodeState.FAULT, f"read failed: {exc}")
            return
        self._set(NodeState.RUNNING, "publishing new observations")
        if not obs.stamp > self._last_stamp:  # not new (also: nothing arrived yet, stamp -inf)
            return
        self._last_stamp = obs.stamp
        if not obs.valid:
            self.invalid_frames += 1
            return
        stamp = obs.stamp if self.device_clock is None else now - (device_now - obs.stamp)
        self._pub.publish(point_msg(stamp, obs.position))
        self.published += 1

    def _set(self, state: NodeState, detail: str) -> None:
        if (state, detail) == self._status:
            return
        self._status = (state, detail)
        if state is NodeState.FAULT:
            self.get_logger().error(f"object_tracker: {detail}")
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        state, detail = self._status
        values = {"device": self.device.name, "device_lifecycle": self.device.state.value,
                  "published": self.published, "invalid_frames": self.invalid_frames,
                  "topic": self.topics.object_position}
        self._diag_pub.publish(diagnostics_msg(self.get_name(), state, self._now(), detail, values))
