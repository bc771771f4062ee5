"""The safety node: owns the safety stop's latch (:class:`~handover.runtime.estop.EstopLatch`).

Node name ``safety``.

The node starts LATCHED: a safety node that starts or restarts never releases a stop by itself (at
the cell's first bring-up the operator releases it: estop ``false``, then the reset service).

- ``/handover/estop`` (``std_msgs/Bool``, reliable + transient local, in): any ``true`` latches.
- ``/handover/estop/reset`` (``std_srvs/Trigger``): releases the latch while the last estop message
  is ``false``; while it is ``true`` the reset is refused, ``success=False`` with the reason in
  ``message``. Every accepted reset publishes the latch state again (a node that ignored an earlier
  ``false`` because another publisher was on the topic gets another chance).
- ``/handover/safety/latched`` (``std_msgs/Bool``, reliable + transient local, out): the latch,
  once at start-up (``true``) and on every change or accepted reset. Drivers and the policy node
  release on its ``false`` only while this node is the topic's only publisher
  (:func:`~handover.runtime.estop.release_check`); a ``true`` from anyone stops them.
- ``/diagnostics``: ``running`` while released, ``estopped`` while latched (1 Hz wall time and on
  every change), with the publishers of the latch topic that are not this node (``foreign_latch_publishers``):
  a node on the domain that publishes there blocks every release. While latched, the 1 Hz timer
  also publishes the latch (``true``) again if such a publisher exists, so a ``false`` it sent is
  superseded.

The nodes that must stop react to ``/handover/estop`` themselves (see :mod:`handover.runtime.estop`),
so a slow safety node delays only the release, never the stop. All callbacks share the node's
default (mutually exclusive) callback group: the latch is never touched by two at once.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from handover.runtime.cell_config import CellConfig
from handover.runtime.estop import SAFETY_NODE_NAME, EstopLatch
from handover.runtime.ros_interface import NodeState, Topics, diagnostics_msg, qos_events, qos_latched

DIAGNOSTICS_PERIOD_S = 1.0  # wall time


class SafetyNode(Node):
    """Public for tests: :attr:`latch` (the :class:`EstopLatch`), :attr:`resets_accepted`,
    :attr:`resets_refused`, :attr:`state`."""

    def __init__(self, cfg: CellConfig, *, context=None, parameter_overrides=None):
        super().__init__(SAFETY_NODE_NAME, context=context, parameter_overrides=parameter_overrides)
        self.topics = Topics.from_config(cfg)
        self.latch = EstopLatch(latched=True)  # never released by a (re)start
        self.resets_accepted = 0
        self.resets_refused = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, self.topics.diagnostics, qos_events())
        self._latched_pub = self.create_publisher(Bool, self.topics.safety_latched, qos_latched())
        self._estop_sub = self.create_subscription(Bool, self.topics.estop, self._on_estop, qos_latched(depth=10))
        self._reset_srv = self.create_service(Trigger, self.topics.estop_reset, self._on_reset)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._changed()
        self.get_logger().warning(f"started latched: release with false on {self.topics.estop}, "
                                  f"then {self.topics.estop_reset}")

    @property
    def state(self) -> NodeState:
        return NodeState.ESTOPPED if self.latch.latched else NodeState.RUNNING

    def _on_estop(self, msg: Bool) -> None:
        if self.latch.on_estop(msg.data):
            self.get_logger().warning(f"safety stop latched by {self.topics.estop} "
                                      f"(stop {self.latch.stops}); reset with {self.topics.estop_reset}")
            self._changed()

    def _on_reset(self, request, response):
        response.success, response.message = self.latch.request_reset()
        if response.success:
            self.resets_accepted += 1
            self.get_logger().info(f"{self.topics.estop_reset}: {response.message}")
        else:
            self.resets_refused += 1
            self.get_logger().warning(f"{self.topics.estop_reset}: {response.message}")
        if response.success:  # changed or not: publish the state again (see the module docstring)
            self._changed()
        return response

    def _changed(self) -> None:
        self._latched_pub.publish(Bool(data=self.latch.latched))
        self._publish_diagnostics()

    def foreign_latch_publishers(self) -> list[str]:
        """The publishers of the latch topic that are not a node named like this one (``/ns/name``)."""
        me = (self.get_name(), self.get_namespace())
        return sorted(f"{i.node_namespace.rstrip('/')}/{i.node_name}"
                      for i in self.get_publishers_info_by_topic(self.topics.safety_latched)
                      if (i.node_name, i.node_namespace) != me)

    def _publish_diagnostics(self) -> None:
        latch = self.latch
        foreign = self.foreign_latch_publishers()
        if foreign and latch.latched:
            self._latched_pub.publish(Bool(data=True))  # supersede whatever they sent
        values = {"latched": latch.latched, "last_estop": latch.last_estop, "stops": latch.stops,
                  "resets_accepted": self.resets_accepted, "resets_refused": self.resets_refused,
                  "foreign_latch_publishers": ", ".join(foreign)}
        detail = ("latched: publish false on the estop topic, then call the reset service" if latch.latched
                  else "released")
        if foreign:
            detail += f"; other publishers on {self.topics.safety_latched} block every release: {', '.join(foreign)}"
        now = self.get_clock().now().nanoseconds * 1e-9
        self._diag_pub.publish(diagnostics_msg(self.get_name(), self.state, now, detail, values))
