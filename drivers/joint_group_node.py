"""The driver node of one joint group (an arm or a hand): topics in and out of a :class:`JointGroup`.

One instance per group, node name ``{side}_{group}_driver`` (e.g. ``thrower_arm_driver``).

- ``/handover/{side}/{group}/joint_states`` (``sensor_msgs/JointState``, out): a timer at
  ``state_rate_hz`` (default: the config's ``joint_state_rate_hz``, 100 Hz) reads the device and publishes positions
  (rad), velocities (rad/s) and efforts (N*m) where the device measures them, names as in the cell
  config. Stamp: the node clock's time of the read (ROS time; sim time under ``use_sim_time``).
- ``/handover/{side}/{group}/joint_commands`` (``sensor_msgs/JointState``, in): position targets
  (rad), matched by name, through the device's command gate (:mod:`handover.runtime.command_gate`):
  clamped to the joint limits, each joint's change per command limited to its velocity limit x the
  control period. Followed only for the episode that is started (below); ignored (and counted)
  while the safety stop is latched. A command the gate refuses (duplicate, unknown or missing
  names, lengths, targets not finite) is not applied: the device holds its measured position, the
  refusal is logged with the topic and the names, and the node is in ``fault`` until a good
  command comes. The node keeps running.
- ``/handover/policy/episode_start`` (``std_msgs/String``, reliable, volatile, in): the token of each
  episode the policy starts. The node follows only commands whose ``header.frame_id`` equals the
  last token it received while it was up and not stopped (:class:`~handover.runtime.episode_token.EpisodeArming`);
  every other command is ignored and counted (``commands_ignored_not_started``). It starts
  disarmed, a safety stop disarms it. So no unrequested motion: a driver that starts or restarts
  (also mid-episode: the announcement is volatile, it never learns of a running episode) and a
  driver after a released stop hold until the next start.
- Start-up: the device is brought up and holds its measured position at once (a restarted driver
  on a device that was following an old target stops it there).
- Stale stream: the state timer polls the gate (:meth:`JointGroup.poll`); when the commands the
  device was following stop for more than the gate's ``stale_s`` (stale periods x control period),
  the device holds its measured position and the node reports ``holding`` saying the stream went
  stale, until the next command (``running``).
- The safety stop (:func:`~handover.runtime.estop.listen_for_stop`): a ``true`` on
  ``/handover/estop`` makes the device hold its measured position at once, in the estop callback
  itself. That callback has its own callback group (in a multi-threaded executor it never waits
  behind a state read or a command for longer than one device call; in a single-threaded one,
  behind at most one of this node's short callbacks). A lock makes "stopped?" and "command" one
  step, so no command slips in after the hold. The stop disarms the episode. A ``true`` on
  ``/handover/safety/latched`` from anyone stops too; only the safety node's ``false`` releases
  (:func:`~handover.runtime.estop.listen_for_stop`: other publishers' ``false`` is ignored and
  counted). After the release the device keeps holding (``holding``) until the next episode start
  and its commands (``running``).
- ``/diagnostics``: this node's state (``running``, ``holding``, ``estopped``, ``fault``) at 1 Hz
  (wall time, so it keeps coming while sim time stands still) and on every change, with the gate's
  counters (commands clamped, rate limited, stale holds), its mode, and the device's own values
  (:meth:`~handover.drivers.device.Device.diagnostics`: an xArm's controller error and warning
  codes with the vendor's words and its servo stream rate; an Allegro's status bits, temperature
  and PD cycles; ``device_fault``: the device's fault reason).
- Device faults: a device that faults from its own thread (a vendor error, a lost connection, a
  status bit; :meth:`~handover.drivers.device.Device.report_fault`) is found by the state timer
  (within one state period): the node goes to ``fault`` with ``<device> in FAULT: <the vendor's
  words>``, stops publishing joint states (the policy sees the group go stale and ends its episode
  as a fault) and every command fails (the device refuses it).
- Recovery, service ``~/recover`` (``std_srvs/Trigger``, e.g. ``/thrower_arm_driver/recover``): once
  the cause is removed (obstacle, E-stop button, cable, a cooled-down hand), the operator calls it:
  the node closes the device, configures it again, runs the device's own recovery where it has one
  (the xArm's ``recover()``: ``clean_error``/``clean_warn``), activates it and holds the measured
  position; it follows no command until the next episode start. ``success`` false with the
  device's words (the node stays in ``fault``) while the cause persists. Allowed in any state, also
  while the safety stop is latched (the device then holds and the node stays ``estopped``).

Time: the device's ``now`` is seconds on the node clock, unless ``device_clock`` is given (a
callable returning the device's own time, s): the twin paced to real time without ``/clock`` runs
on simulation time while every node runs on wall time. Published stamps are always the node clock.

The node never closes the device: its owner does.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String
from std_srvs.srv import Trigger

from handover.drivers.device import DeviceError, Lifecycle
from handover.drivers.joint_group import JointGroup
from handover.runtime.cell_config import CellConfig
from handover.runtime.episode_token import EpisodeArming
from handover.runtime.estop import listen_for_stop
from handover.runtime.ros_interface import (
    GROUPS,
    SIDES,
    NodeState,
    Topics,
    diagnostics_msg,
    joint_names,
    joint_state_msg,
    qos_command,
    qos_episode_start,
    qos_events,
    qos_sensor,
)

DIAGNOSTICS_PERIOD_S = 1.0  # wall time


def checked_rate(value, where: str) -> float:
    """``value`` as a rate in Hz, or a ``ValueError`` naming ``where`` it came from and the value."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a rate in Hz, got {value!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{where}: a rate must be a finite number > 0 Hz, got {value!r}")
    return rate


def bring_up(device) -> None:
    """Configure and activate ``device`` as far as needed; raises :class:`DeviceError` if it cannot
    become ACTIVE (STOPPED or FAULT need ``close()`` and a reconnect by its owner first)."""
    if device.state is Lifecycle.UNCONFIGURED:
        device.configure()
    if device.state is Lifecycle.INACTIVE:
        device.activate()
    if device.state is not Lifecycle.ACTIVE:
        raise DeviceError(f"{device.name}: is {device.state.value}"
                          + (f" ({device.fault_reason})" if device.fault_reason else "")
                          + "; a driver node needs it active: close() and reconnect it")


class JointGroupNode(Node):
    """Wires one :class:`JointGroup` to its topics, the safety stop and ``/diagnostics``.

    Public for tests and the bring-up: :attr:`state`, :attr:`detail`, :attr:`stopped`,
    :attr:`commands_applied`, :attr:`commands_ignored` (arrived while stopped), :attr:`arming` (the
    :class:`EpisodeArming`: the armed episode, commands ignored because not started), :attr:`stop_listener`,
    :attr:`commands_rejected` (refused by the gate), :attr:`commands_clamped` and
    :attr:`commands_rate_limited` (applied, but changed by the gate), :attr:`stale_holds` (holds
    because the stream went stale), :attr:`stop_events` (one ``(time.monotonic(),
    time.perf_counter())`` per stop, taken right after the device's hold returned).
    """

    def __init__(self, device: JointGroup, cfg: CellConfig, side: str, group: str, *, context=None,
                 state_rate_hz: Optional[float] = None, parameter_overrides=None,
                 device_clock: Optional[Callable[[], float]] = None):
        if side not in SIDES:
            raise ValueError(f"JointGroupNode: side {side!r}: expected one of {', '.join(SIDES)}")
        if group not in GROUPS:
            raise ValueError(f"JointGroupNode: group {group!r}: expected one of {', '.join(GROUPS)}")
        self.names = joint_names(cfg, side, group)
        if tuple(device.info.names) != self.names:
            raise ValueError(f"JointGroupNode: device {device.name!r} has joints {list(device.info.names)}, "
                             f"but {cfg.source} {side}.{group}.joints are {list(self.names)}")
        if state_rate_hz is None:
            rate = checked_rate(cfg.joint_state_rate_hz, f"{cfg.source}: joint_state_rate_hz")
        else:
            rate = checked_rate(state_rate_hz, f"JointGroupNode({side}, {group}): state_rate_hz")
        super().__init__(f"{side}_{group}_driver", context=context, parameter_overrides=parameter_overrides)

        self.device = device
        self.device_clock = device_clock
        self.side, self.group = side, group
        self.topics = Topics.from_config(cfg)
        self.state_topic = self.topics.joint_states[(side, group)]
        self.command_topic = self.topics.joint_commands[(side, group)]
        self.state_period_s = 1.0 / rate

        self.commands_applied = 0
        self.commands_ignored = 0
        self.commands_rejected = 0
        self.commands_clamped = 0
        self.commands_rate_limited = 0
        self.stale_holds = 0
        self.stop_events: list[tuple[float, float]] = []
        self.arming = EpisodeArming()
        self._stopped = False
        self._status = (NodeState.HOLDING, "no command yet")  # (state, detail), replaced as a whole
        # Guards the device and the state: a command is checked against the stop and applied in one
        # step, so no command can slip in after the hold.
        self._lock = threading.Lock()
        # Reads the state and publishes it in one step, so a periodic report can never overtake
        # the report of a newer change.
        self._diag_lock = threading.Lock()

        self._diag_pub = self.create_publisher(DiagnosticArray, self.topics.diagnostics, qos_events())
        self._state_pub = self.create_publisher(JointStateMsg, self.state_topic, qos_sensor())

        io = MutuallyExclusiveCallbackGroup()
        self._stop_group = MutuallyExclusiveCallbackGroup()
        try:
            bring_up(device)
            device.hold(self._device_now())  # a (re)started driver holds where the joints are
            self._status = (NodeState.HOLDING, "no episode started while this driver is up: holding the measured position")
        except (DeviceError, ValueError) as exc:
            self._status = (NodeState.FAULT, str(exc))
            self.get_logger().error(f"{self.get_name()}: {exc}")
        self._command_sub = self.create_subscription(JointStateMsg, self.command_topic, self._on_command,
                                                     qos_command(), callback_group=io)
        self._start_sub = self.create_subscription(String, self.topics.episode_start, self._on_episode_start,
                                                   qos_episode_start(), callback_group=io)
        self.stop_listener = listen_for_stop(self, self.topics, self._on_stop, self._on_release,
                                             callback_group=self._stop_group)
        self.recoveries = 0
        self._recover_srv = self.create_service(Trigger, "~/recover", self._on_recover, callback_group=io)
        self._state_timer = self.create_timer(self.state_period_s, self._on_state_timer, callback_group=io)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=io,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._publish_diagnostics()

    # -- public view -----------------------------------------------------------------------------

    @property
    def state(self) -> NodeState:
        return self._status[0]

    @property
    def detail(self) -> str:
        """Why the node is in its state (a fault's message)."""
        return self._status[1]

    @property
    def stopped(self) -> bool:
        """True while the safety stop is latched for this node."""
        return self._stopped

    # -- callbacks -------------------------------------------------------------------------------

    def _now(self) -> float:
        """The node clock in seconds (sim time under ``use_sim_time``)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _device_now(self) -> float:
        """The ``now`` for the device, s: its own clock if one was given, else the node clock."""
        return self.device_clock() if self.device_clock is not None else self._now()

    def _on_stop(self) -> None:
        now = self._device_now()
        with self._lock:
            self._stopped = True
            self.arming.disarm()
            try:
                self.device.hold(now)
            except DeviceError as exc:
                changed = self._set_locked(NodeState.FAULT, self._fault_detail() if self.device.state is Lifecycle.FAULT
                                           else f"estop: hold failed: {exc}")
            else:
                self.stop_events.append((time.monotonic(), time.perf_counter()))
                changed = self._set_locked(NodeState.ESTOPPED, "safety stop latched: holding, commands ignored")
        if changed:
            state, detail = self._status
            if state is NodeState.FAULT:
                self.get_logger().error(f"{self.get_name()}: {detail}")
            self._publish_diagnostics()

    def hold(self, why: str) -> None:
        """Hold the measured position now and follow no command until the next episode starts
        (``why`` goes to the diagnostics): the graph's last word to the device before it closes."""
        now = self._device_now()
        with self._lock:
            self.arming.disarm()
            if self.device.state is Lifecycle.ACTIVE:
                self.device.hold(now)
            self._set_locked(NodeState.HOLDING, f"{why}: holding the measured position")

    def _on_release(self) -> None:
        with self._lock:
            if not self._stopped:
                return
            self._stopped = False
            changed = (self._status[0] is NodeState.ESTOPPED
                       and self._set_locked(NodeState.HOLDING,
                                            "safety stop released: holding until the next episode start"))
        if changed:
            self._publish_diagnostics()

    def _on_episode_start(self, msg: String) -> None:
        with self._lock:
            armed = self.arming.on_start(msg.data, self._stopped)
        if armed:
            self.get_logger().info(f"{self.topics.episode_start}: episode {msg.data!r} started: following its commands")
        else:
            self.get_logger().warning(f"{self.topics.episode_start}: episode {msg.data!r} ignored: "
                                      + ("the safety stop is latched" if self._stopped else "no token"))

    def _on_command(self, msg: JointStateMsg) -> None:
        now = self._device_now()
        error = None
        ignored = ""
        with self._lock:
            if self._stopped:
                self.commands_ignored += 1
                return
            token = msg.header.frame_id
            if not self.arming.accepts(token):
                # not the started episode: the device keeps what it does (holding, or the started
                # episode's last target); said once in the diagnostics while not following anything
                ignored = self.arming.why_ignored(token)
                changed = self._status[0] is NodeState.HOLDING and self._set_locked(NodeState.HOLDING, ignored)
        if ignored:
            self.get_logger().warning(f"{self.command_topic}: {ignored}", throttle_duration_sec=1.0)
            if changed:
                self._publish_diagnostics()
            return
        with self._lock:
            if self._stopped or self.arming.armed != token:  # a stop came in between
                self.commands_ignored += 1
                return
            try:
                self.device.command_by_name(list(msg.name), list(msg.position), now)
            except DeviceError as exc:  # the device itself (FAULT, STOPPED, ...)
                error = (self._fault_detail() if self.device.state is Lifecycle.FAULT
                         else f"{self.command_topic}: command failed: {exc}")
            except ValueError as exc:  # refused by the gate (names, lengths, not finite); the device holds
                self.commands_rejected += 1
                error = f"{self.command_topic}: command rejected: {exc}; holding the measured position"
            else:
                self.commands_applied += 1
                gate = self.device.last_gate
                self.commands_clamped += bool(gate is not None and gate.clamped)
                self.commands_rate_limited += bool(gate is not None and gate.rate_limited)
            changed = (self._set_locked(NodeState.FAULT, error) if error
                       else self._set_locked(NodeState.RUNNING, "following commands"))
        if error:
            self.get_logger().error(error, throttle_duration_sec=1.0)
        if changed:
            self._publish_diagnostics()

    def _on_state_timer(self) -> None:
        now = self._now()
        changed = False
        with self._lock:
            # Read under the lock: a stop's hold in between must not look like the clock going back.
            device_now = now if self.device_clock is None else self.device_clock()
            js = None
            if self.device.state is Lifecycle.FAULT and not self._reports_device_fault_locked():
                # faulted from its own thread (or a call): say so with the device's (vendor's) words
                changed = self._set_locked(NodeState.FAULT, self._fault_detail())
            try:
                js = self.device.read(device_now)
                stale = self.device.poll(device_now)  # holds if the followed stream went stale
            except DeviceError as exc:
                action = "read" if js is None else "stale-stream hold"
                if not self._reports_device_fault_locked():  # else keep the first, most telling message
                    changed = self._set_locked(NodeState.FAULT, f"{action} failed: {exc}")
            else:
                if stale:
                    self.stale_holds += 1
                    if self._status[0] is NodeState.RUNNING:
                        changed = self._set_locked(NodeState.HOLDING,
                                                   f"{self.command_topic}: {stale}; holding the measured position")
        if js is not None:
            self._state_pub.publish(joint_state_msg(self.names, now, js.position, js.velocity, js.effort))
        if changed:
            state, detail = self._status
            if state is NodeState.FAULT:
                self.get_logger().error(f"{self.get_name()}: {detail}")
            else:
                self.get_logger().warning(f"{self.get_name()}: {detail}")
            self._publish_diagnostics()

    # -- state and diagnostics -------------------------------------------------------------------

    def _fault_detail(self) -> str:
        return (f"{self.device.name} in FAULT: {self.device.fault_reason}; remove the cause, then call "
                f"{self.get_fully_qualified_name()}/recover")

    def _on_recover(self, request, response):
        """The operator's recovery (module doc): close, configure, the device's own recover(), activate, hold."""
        with self._lock:
            self.arming.disarm()
            try:
                self.device.close()
                self.device.configure()
                recover = getattr(self.device, "recover", None)
                if callable(recover):
                    recover()
                self.device.activate()
                self.device.hold(self._device_now())
            except (DeviceError, ValueError) as exc:
                detail = f"recovery failed: {exc}"
                self._set_locked(NodeState.FAULT, detail)
                response.success, response.message = False, detail
            else:
                self.recoveries += 1
                if self._stopped:
                    detail = "recovered; the safety stop is latched: holding, commands ignored"
                    self._set_locked(NodeState.ESTOPPED, detail)
                else:
                    detail = "recovered: holding the measured position until the next episode start"
                    self._set_locked(NodeState.HOLDING, detail)
                response.success, response.message = True, f"{self.device.name}: {detail}"
        if response.success:  # (rclpy: one severity per logging call site)
            self.get_logger().info(f"{self.get_name()}: {response.message}")
        else:
            self.get_logger().error(f"{self.get_name()}: {response.message}")
        self._publish_diagnostics()
        return response

    def _reports_device_fault_locked(self) -> bool:
        """True if the state is already FAULT with the device's fault reason in its message."""
        reason = self.device.fault_reason
        return self._status[0] is NodeState.FAULT and bool(reason) and reason in self._status[1]

    def _set_locked(self, state: NodeState, detail: str) -> bool:
        """Set the state (caller holds the lock); True if state or detail changed."""
        changed = (state, detail) != self._status
        self._status = (state, detail)
        return changed

    def _gate_mode(self) -> str:
        gate = self.device.gate_state
        return "holding" if gate is None else gate.mode.value

    def _device_values(self) -> dict:
        try:
            return {k: v for k, v in self.device.diagnostics().items()}
        except Exception as exc:  # noqa: BLE001 - diagnostics must not fail
            return {"device_diagnostics_error": f"{type(exc).__name__}: {exc}"}

    def _publish_diagnostics(self) -> None:
        values = {"device": self.device.name, "device_lifecycle": self.device.state.value,
                  "commands_applied": self.commands_applied, "commands_ignored_while_stopped": self.commands_ignored,
                  "commands_rejected": self.commands_rejected, "commands_clamped": self.commands_clamped,
                  "commands_rate_limited": self.commands_rate_limited, "stale_holds": self.stale_holds,
                  "gate": self._gate_mode(), "stops": len(self.stop_events),
                  "joint_states": self.state_topic, "joint_commands": self.command_topic,
                  "recoveries": self.recoveries, "device_fault": self.device.fault_reason or "",
                  **self._device_values(), **self.arming.values(), **self.stop_listener.values()}
        with self._diag_lock:
            state, detail = self._status
            self._diag_pub.publish(diagnostics_msg(self.get_name(), state, self._now(), detail, values))


