"""The policy node (``policy``): joint states and the object position in, joint commands out, one
control loop paced in one place.

Inputs (names and QoS from :mod:`handover.runtime.ros_interface`):

- the four ``/handover/{side}/{group}/joint_states``: the newest positions (rad) per group are kept
  with their receive time (``time.perf_counter`` s, for the latency records; the node's clock s,
  for staleness) and their stamp;
- ``/handover/object/position`` (PointStamped, world frame, m): the newest one, as an
  :class:`~handover.drivers.object_tracker.ObjectObservation` (a non-finite point, or a frame other
  than ``world``, counts as "not found"); until one arrives the controller uses the configured
  start position (and after that its last valid one);
- ``/handover/estop`` and ``/handover/safety/latched`` through :func:`~handover.runtime.estop.listen_for_stop`.
  The node starts stopped: it accepts no start before the safety node's ``false`` on the latch topic
  (only the safety node's counts).

Implausible inputs (:mod:`handover.runtime.plausibility`, bounds from the cell config's
``plausibility:`` section, with the joints' hardware ranges in its ``joint_ranges``): a joint
state with a joint more than ``joint_margin`` beyond its hardware range, an object position outside
the workspace box, and any of these messages stamped more than ``stamp_future_s`` after or
``stamp_past_s`` before the node's clock (not judged before the clock has a time: sim time before
the first ``/clock``) are dropped before anything is stored: never used, and a dropped joint state
does not refresh its group's freshness (a driver that sends only implausible states is stale, a
cell that does is lost, as if silent). Each is counted per topic and kind on ``/diagnostics``
(``implausible_inputs``, ``implausible <kind> <topic>``, ``implausible last <topic>``) and logged,
at most every :data:`IMPLAUSIBLE_LOG_PERIOD_S` per topic and kind.

Outputs: the four ``joint_commands`` (position targets, rad, names from the cell config; the
episode's token in ``header.frame_id``), ``/handover/policy/predicted_goal`` (world frame, m),
``/handover/policy/episode_start`` (String, the token ``"<instance id>/<episode n>"``, reliable,
volatile: published when a start is accepted, before its first command),
``/handover/policy/episode_done`` (UInt32, the episode number; only for an episode that ran to its
end: the twin judges it), ``/handover/policy/episode_end`` (String, JSON, once per accepted start:
``reason`` done / stopped / fault / cell lost and ``detail``, see
:func:`~handover.runtime.ros_interface.episode_end_msg`) and ``/diagnostics``. Service
``/handover/start`` (Trigger). Commands and predictions are stamped with their tick's deadline
(node clock): the control step they belong to. The drivers follow only the commands of the episode
whose start they received (:mod:`handover.runtime.episode_token`).

Fail-safe outputs: every command is checked before it is published (44 finite values,
:func:`~handover.runtime.episode_token.command_problem`), and the predicted goal too; a non-finite
output, or an exception of the controller (outputs it refuses), aborts the episode: FAULT,
nothing more is published for it, ``fault`` with the reason on ``/diagnostics`` and ``episode_end``.
A NaN never leaves the node.

Cell lost: when no joint state of any group arrived for ``cell_lost_s`` (default
:data:`CELL_LOST_S`, wall clock), the node stops commanding on its next tick, in every phase
(also IDLE, where it held the last targets: the hold is dropped), reports ``fault`` ("cell lost:
no joint states for X s") and ends a running episode with ``cell lost``. When joint states come
back it reports ``running`` again and is IDLE, commanding nothing until the next start.

The control loop is one :class:`~handover.runtime.control_loop.PacedLoop` at the control period on
the node's ROS clock (so it follows ``/clock`` under ``use_sim_time``), in its own thread; it is the
only thread that publishes commands. The episode protocol is the
:class:`~handover.runtime.episode_sequencer.EpisodeSequencer`'s (the twin's lockstep episodes run the
same one): each tick feeds it the tick's deadline, the newest joint positions and object
observation, and publishes what it returns; the node keeps the ROS side (the place-object service
call, staleness, the safety stop, faults) and maps it onto the sequencer's hooks. Each tick does
what its phase says:

========  ==============================================================================================
phase     each tick
========  ==============================================================================================
IDLE      nothing before the first episode, after a released stop and after the cell was lost; after an
          episode, the episode's last targets again with its token, so that the catcher keeps
          holding the object it caught
BLEND     from the positions measured when the start was accepted to the controller's reset targets
          on a minimum-jerk profile over ``blend_s`` (the first command is the measured position:
          no jump)
PLACE     the reset targets, for ``settle_s``; on entry ``/handover/twin/place_object`` is called once
          if it exists (only the twin serves it; on hardware the operator has placed the object).
          Ends when ``settle_s`` has passed and the twin has answered
WARMUP    the reset targets; one dry policy step on the current inputs (result discarded), then the
          controller is reset. The dry step runs in a second controller over the same networks: the
          contract's frame stack survives a reset (quirk of the original), so a dry step in the
          episode's own controller would leave its frame in the first observations (measured in
          the twin: the reference policy then drops the object in every episode)
EPISODE   ``cfg.episode_steps`` ticks of ``controller.targets(t, q44, obs)``: the four joint commands
          and the predicted goal. The tick after the last one publishes the episode number on
          ``episode_done`` and ``episode_end`` (done) (so the twin judges after at least one control
          period under the last command, like the twin's own episodes) and the node goes back to
          IDLE, holding
ESTOPPED  nothing (see below); also from the node's start until the safety node's release
FAULT     nothing; a new start clears the fault (the cell's return clears a "cell lost")
========  ==============================================================================================

Safety stop: a ``true`` on the estop topic sets a flag in the callback (its own callback group);
the flag is checked right before every single publish of a command, so no command leaves after
the stop; the loop aborts the episode on its next tick. Latched until the safety node releases it;
after the release the node is IDLE and publishes nothing until the next start.

Stale inputs (receive times on the node's clock) while an episode is under way (BLEND to EPISODE)
are a fault: the episode is aborted and the diagnostics name the group. A group is stale when its
newest joint state is more than ``stale_periods`` control periods (default 15) older than the newest
of the other groups (its driver stopped); no group at all is the cell lost (above). Relative to the
other groups, so that a process
that stalls as a whole (a busy executor, a descheduled process) does not abort the episode; with
the whole graph in one Python process on two cores shared with other work, single driver threads
were still seen 0.1-0.3 s behind the others (the tests relax ``stale_periods`` for that).

Settling: in the twin (in process, no ROS delays, a 1 s hold of the reset pose before the object
is placed), the reference bundle caught 24 of 24 episodes after 0.5 s of settling, 21 of 24 after
0.3 s (the object still creeps in the hand), hence the default ``settle_s`` of 0.5 s.

Executors: the callback groups let a multi-threaded executor deliver joint states while the start
service's response is being sent (rmw_fastrtps blocks up to 100 ms on a first response while it
matches the client's reader); in a single-threaded executor that stall counts towards staleness.

Timing records (:meth:`PolicyNode.timing`): per EPISODE tick, the latency from the receive time of
the newest joint state used to the publish of the last joint command (perf_counter s), the time
spent in the policy step; the loop's wake-ups, jitter and overruns.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String, UInt32
from std_srvs.srv import Trigger

from handover.drivers.object_tracker import ObjectObservation
from handover.runtime.cell_config import CellConfig
from handover.runtime.contract import ContractSpec
from handover.runtime.control_loop import PacedLoop, RosClock
from handover.runtime.episode_sequencer import ACTIVE_PHASES, EpisodeSequencer, Phase, SequencerTick, min_jerk
from handover.runtime.episode_token import CellWatch, command_problem, make_token, new_instance_id
from handover.runtime.estop import listen_for_stop
from handover.runtime.plausibility import RejectionLog, joint_problem, object_problem, stamp_problem
from handover.runtime.contract_state import ContractNoise
from handover.runtime.policy_controller import PolicyController
from handover.runtime.policy_networks import PolicyNetworks
from handover.runtime.step_topic import POLICY_STEP_TOPIC, PolicyStepRecord, step_msg
from handover.runtime.ros_interface import (
    GROUPS,
    SIDES,
    WORLD_FRAME,
    MessageError,
    NodeState,
    Topics,
    diagnostics_msg,
    episode_end_msg,
    joint_names,
    joint_state_msg,
    point_msg,
    positions_by_name,
    qos_command,
    qos_episode_start,
    qos_events,
    qos_sensor,
    stamp_to_s,
)

__all__ = ["ACTIVE_PHASES", "KEYS", "NODE_NAME", "Phase", "PolicyNode", "min_jerk"]  # Phase, min_jerk: the sequencer's

NODE_NAME = "policy"
KEYS = tuple((s, g) for s in SIDES for g in GROUPS)  # contract order: thrower arm, hand, catcher arm, hand
STALE_PERIODS = 15.0  # default (0.75 s at 20 Hz): a group this many control periods behind the newest group is stale
CELL_LOST_S = 0.3  # s, wall clock: no joint state from any group for this long: the cell is lost
# (the bound is "stops commanding within 0.5 s": this plus one control period plus the loop's lateness)
PLACE_TIMEOUT_S = 5.0  # wall-clock limit for the twin's answer to place_object
IMPLAUSIBLE_LOG_PERIOD_S = 5.0  # wall s: an implausible input is logged at most this often per topic and kind


@dataclass
class _GroupInput:
    position: np.ndarray  # rad, the group's joint order (cell config)
    effort: Optional[np.ndarray]  # N*m, same order; None when the driver does not measure efforts
    stamp_s: float  # message stamp, s (the driver's clock)
    received_perf: float  # time.perf_counter() at receipt, s
    received_clock: float  # the node's clock at receipt, s (sim time under use_sim_time)


class PolicyNode(Node):
    """The policy as a ROS 2 node. ``networks``: a loaded bundle (:meth:`PolicyNetworks.load`).

    ``blend_s``: duration of the blend to the reset pose (s, node clock); ``settle_s``: how long the
    reset pose is held after the object was placed (s); ``stale_periods``: how many control periods
    a joint-state group may lag the newest one before it is stale; ``cell_lost_s``: no joint state
    from any group for this long (wall s) is the cell lost. ``parameter_overrides``: e.g.
    ``use_sim_time``. Call :meth:`start_loop` once the node spins; :meth:`stop_loop` (or
    ``destroy_node``) ends the loop for good.

    :attr:`phase` is the sequencer's (read from any thread); :attr:`fault` why the last episode was
    aborted ("" until then, cleared by a start); :attr:`cell_lost` why the cell counts as lost ("" while
    joint states arrive); :attr:`instance_id` (this node's part of the episode tokens);
    :attr:`episode_ends` (every ``episode_end`` sent, as dicts); :attr:`last_command_perf`
    (``time.perf_counter()`` of the last command published, or None) and :attr:`last_state_perf`
    (of the newest joint state received and kept); :meth:`implausible_counts` (inputs dropped as
    physically implausible, per topic and kind).
    """

    def __init__(self, cfg: CellConfig, networks: PolicyNetworks, *, context=None, blend_s: float = 1.0,
                 settle_s: float = 0.5, stale_periods: float = STALE_PERIODS, cell_lost_s: float = CELL_LOST_S,
                 parameter_overrides=None):
        super().__init__(NODE_NAME, context=context, parameter_overrides=parameter_overrides)
        if not (math.isfinite(blend_s) and blend_s > 0):
            raise ValueError(f"PolicyNode: blend_s must be a positive number of seconds, got {blend_s!r}")
        if not (math.isfinite(settle_s) and settle_s >= 0):
            raise ValueError(f"PolicyNode: settle_s must be >= 0 s, got {settle_s!r}")
        if not (math.isfinite(stale_periods) and stale_periods >= 1):
            raise ValueError(f"PolicyNode: stale_periods must be >= 1 control period, got {stale_periods!r}")
        if not (math.isfinite(cell_lost_s) and cell_lost_s > 0):
            raise ValueError(f"PolicyNode: cell_lost_s must be a positive number of seconds, got {cell_lost_s!r}")
        self.cfg = cfg
        self.topics = Topics.from_config(cfg)
        self.period_s = cfg.control_period_s
        self.blend_s = float(blend_s)
        self.settle_s = float(settle_s)
        self.stale_s = float(stale_periods) * self.period_s
        self.instance_id = new_instance_id()
        self.episode_ends: list[dict] = []
        self.last_command_perf: Optional[float] = None
        self.last_state_perf: Optional[float] = None
        spec = ContractSpec.from_config(cfg)
        noise = ContractNoise(history=cfg.history_noise)  # as the original adds it always (contract document)
        self.controller = PolicyController(spec, networks, cfg.goal.center, cfg.object.start_position, noise)
        self._dry = PolicyController(spec, networks, cfg.goal.center, cfg.object.start_position, noise)  # the warm-up's own state
        self._goal_rng = np.random.default_rng()  # the goal is drawn per episode (cfg.goal)
        self._seq = EpisodeSequencer(self.controller, self._dry, period_s=self.period_s,
                                     episode_steps=cfg.episode_steps, blend_s=self.blend_s, settle_s=self.settle_s)
        self.names = {k: joint_names(cfg, *k) for k in KEYS}
        self._all_names = [n for k in KEYS for n in self.names[k]]

        # -- inputs (executor threads write, the loop reads; guarded by _lock) --------------------
        self._lock = threading.Lock()
        self._joints: dict[tuple[str, str], _GroupInput] = {}
        self._object = ObjectObservation(stamp=-np.inf, valid=False)
        self._input_errors: dict[str, str] = {}  # topic -> last rejected message's problem
        self._implausible = RejectionLog(IMPLAUSIBLE_LOG_PERIOD_S)  # implausible inputs (plausibility.py)
        self._hardware = {k: cfg.plausibility.hardware_range(*k) for k in KEYS}  # rad, per group
        self._start_requested = False
        self._episode = 0  # number of the current/last accepted episode
        self._token = ""  # its token (make_token)
        self._stopped = threading.Event()  # the stop is latched: checked before every command publish
        self._stopped.set()  # until the safety node releases it
        self._stops = 0  # stops seen (the loop aborts when this changes)
        self._cell = CellWatch(float(cell_lost_s))  # the loop thread checks it; others read .lost

        sensors = ReentrantCallbackGroup()
        self._subs = [
            self.create_subscription(JointState, self.topics.joint_states[k], self._joint_callback(k), qos_sensor(),
                                     callback_group=sensors) for k in KEYS]
        self._subs.append(self.create_subscription(PointStamped, self.topics.object_position, self._on_object,
                                                   qos_sensor(), callback_group=sensors))
        self.stop_listener = listen_for_stop(self, self.topics, self._on_stop, self._on_release,
                                             callback_group=MutuallyExclusiveCallbackGroup(), initially_stopped=True)
        self._start_srv = self.create_service(Trigger, self.topics.start, self._on_start,
                                              callback_group=MutuallyExclusiveCallbackGroup())
        self._place_client = self.create_client(Trigger, self.topics.twin_place_object,
                                                callback_group=MutuallyExclusiveCallbackGroup())

        # -- outputs ------------------------------------------------------------------------------
        self._cmd_pubs = {k: self.create_publisher(JointState, self.topics.joint_commands[k], qos_command()) for k in KEYS}
        self._goal_pub = self.create_publisher(PointStamped, self.topics.predicted_goal, qos_command())
        self._step_pub = self.create_publisher(JointState, POLICY_STEP_TOPIC, qos_command())
        self._done_pub = self.create_publisher(UInt32, self.topics.episode_done, qos_events())
        self._start_pub = self.create_publisher(String, self.topics.episode_start, qos_episode_start())
        self._end_pub = self.create_publisher(String, self.topics.episode_end, qos_events())
        self._diag_pub = self.create_publisher(DiagnosticArray, self.topics.diagnostics, qos_events())
        self._diag_lock = threading.Lock()
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())

        # -- loop state (loop thread only, except where noted) -------------------------------------
        self._clock = RosClock(self.get_clock())
        self._loop = PacedLoop(self.period_s, self._clock)
        self._thread: Optional[threading.Thread] = None
        self._shutdown = threading.Event()
        self._fault_episode = 0  # the episode the sequencer's fault belongs to
        self._cmd_token = ""  # the token the commands carry: the begun episode's
        self._ended = 0  # the last episode whose end was published
        self._seen_stops = 0
        self._reported_phase = self.phase  # the phase the diagnostics last reported
        self._place_future = None  # the pending place_object call, if any
        self._place_wall0 = 0.0
        self._deadline = 0.0
        self._latency: list[float] = []
        self._latency_oldest: list[float] = []
        self._compute: list[float] = []
        self._publish_diagnostics()

    @property
    def phase(self) -> Phase:
        """The episode phase (the sequencer's); read by other threads for diagnostics and the start service."""
        return self._seq.phase

    @property
    def fault(self) -> str:
        """Why the last episode was aborted (``"episode N aborted in phase P: why"``), "" if it was not
        (cleared by the next start)."""
        fault = self._seq.fault
        return f"episode {self._fault_episode} {fault}" if fault else ""

    @property
    def cell_lost(self) -> str:
        """Why the cell counts as lost ("cell lost: no joint states for X s ..."), "" while it is there."""
        return self._cell.lost

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------

    def start_loop(self) -> None:
        """Start the control loop thread (once). Under ``use_sim_time`` it waits for the first ``/clock``."""
        if self._thread is not None:
            raise RuntimeError("PolicyNode.start_loop: the control loop was already started")
        self._thread = threading.Thread(target=self._run, name="policy-loop", daemon=True)
        self._thread.start()

    def stop_loop(self, timeout: float = 2.0) -> None:
        """Stop the control loop for good (nothing is published after this returns)."""
        self._shutdown.set()
        self._loop.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def destroy_node(self):
        self.stop_loop()
        return super().destroy_node()

    def _run(self) -> None:
        while not self._shutdown.is_set() and self._clock.now() <= 0.0:  # sim time not yet received
            self._shutdown.wait(0.005)
        if not self._shutdown.is_set():
            self._loop.run(self._tick)

    # ------------------------------------------------------------------------------------------
    # callbacks (executor threads)
    # ------------------------------------------------------------------------------------------

    def _joint_callback(self, key):
        topic, names = self.topics.joint_states[key], self.names[key]
        hardware_lower, hardware_upper = self._hardware[key]
        margin = self.cfg.plausibility.joint_margin

        def callback(msg) -> None:
            received = time.perf_counter()
            try:
                position = positions_by_name(msg, names, topic)
            except MessageError as exc:
                self._reject(topic, str(exc))
                return
            if not np.isfinite(position).all():
                bad = int(np.flatnonzero(~np.isfinite(position))[0])
                self._reject(topic, f"{topic}: joint {names[bad]} position is not finite: {position[bad]}")
                return
            stamp = stamp_to_s(msg.header.stamp)
            implausible = (stamp_problem(stamp, self._clock_now(), self.cfg.plausibility, topic)
                           or joint_problem(names, position, hardware_lower, hardware_upper, margin, topic))
            if implausible:  # never stored: not used, and no sign of life of the driver
                self._reject_implausible(topic, implausible)
                return
            effort = None
            if len(msg.effort) == len(msg.name):  # matched by name, like the positions
                index = {n: i for i, n in enumerate(msg.name)}
                effort = np.array([msg.effort[index[n]] for n in names], dtype=float)
                if not np.isfinite(effort).all():
                    effort = None
            entry = _GroupInput(position, effort, stamp, received, self._clock.now())
            with self._lock:
                self._joints[key] = entry
                self.last_state_perf = received
        return callback

    def _on_object(self, msg) -> None:
        xyz = np.array([msg.point.x, msg.point.y, msg.point.z], dtype=float)
        stamp = stamp_to_s(msg.header.stamp)
        if msg.header.frame_id not in ("", WORLD_FRAME):
            self._reject(self.topics.object_position, f"frame {msg.header.frame_id!r}, expected {WORLD_FRAME!r}")
            obs = ObjectObservation(stamp=stamp, valid=False)
        elif not np.isfinite(xyz).all():
            obs = ObjectObservation(stamp=stamp, valid=False)  # the tracker did not find the object
        else:
            topic, pl = self.topics.object_position, self.cfg.plausibility
            implausible = stamp_problem(stamp, self._clock_now(), pl, topic) or object_problem(xyz, pl, topic)
            if implausible:  # never stored: the controller keeps its last valid position
                self._reject_implausible(topic, implausible)
                return
            obs = ObjectObservation(stamp=stamp, valid=True, position=xyz)
        with self._lock:
            self._object = obs

    def _reject(self, topic: str, problem: str) -> None:
        with self._lock:
            new = self._input_errors.get(topic) != problem
            self._input_errors[topic] = problem
        if new:
            self.get_logger().error(f"ignoring a message: {problem}")

    def _reject_implausible(self, topic: str, found) -> None:
        """Count an implausible message (:class:`~handover.runtime.plausibility.Implausible`) and log
        it, throttled."""
        with self._lock:
            line = self._implausible.add(topic, found, time.monotonic())
        if line:
            self.get_logger().error(line)

    def _clock_now(self) -> Optional[float]:
        """The node's clock (s) for judging stamps; None while it has no time (sim time before the
        first ``/clock``)."""
        now = self._clock.now()
        return now if now > 0.0 else None

    def implausible_counts(self) -> dict[tuple[str, str], int]:
        """Implausible messages dropped so far, ``{(topic, kind): n}`` (a copy; any thread)."""
        with self._lock:
            return dict(self._implausible.counts)

    def _on_stop(self) -> None:
        self._stopped.set()  # before anything else: the loop checks it before every publish
        with self._lock:
            self._stops += 1
        self._publish_diagnostics()

    def _on_release(self) -> None:
        if self._stopped.is_set():
            self._stopped.clear()
            self._publish_diagnostics()

    def _on_start(self, request, response):
        response.success, response.message = self._request_start()
        if response.success:  # (rclpy ties one severity to each logging call site)
            self.get_logger().info(f"{self.topics.start}: {response.message}")
        else:
            self.get_logger().warning(f"{self.topics.start}: {response.message}")
        return response

    def _request_start(self) -> tuple[bool, str]:
        if self._stopped.is_set():
            return False, (f"refused: the safety stop is latched (or the safety node has not released it since this node "
                           f"started); release it ({self.topics.estop} false, then {self.topics.estop_reset})")
        if self._cell.lost:
            return False, f"refused: {self._cell.lost}"
        now = self._clock.now()
        with self._lock:
            if self._start_requested:
                return False, f"refused: the start of episode {self._episode} is already pending"
            if self.phase in ACTIVE_PHASES:
                return False, f"refused: episode {self._episode} is running (phase {self.phase.value})"
            missing = [k for k in KEYS if k not in self._joints]
            if missing:
                return False, "refused: no joint states yet from " + ", ".join(
                    f"{s}/{g} ({self.topics.joint_states[(s, g)]})" for s, g in missing)
            stale = self._stale(self._joints, now)
            if stale:
                return False, f"refused: {stale}"
            self._start_requested = True
            self._episode += 1
            n = self._episode
            self._token = token = make_token(self.instance_id, n)
        # announced before the first command (that comes on the next tick): the drivers arm on it
        self._start_pub.publish(String(data=token))
        return True, (f"accepted: episode {n} ({token}) starts on the next tick: blend to the reset pose over "
                      f"{self.blend_s:g} s, place the object, settle {self.settle_s:g} s, then "
                      f"{self.cfg.episode_steps} policy steps")

    # ------------------------------------------------------------------------------------------
    # the control loop (loop thread)
    # ------------------------------------------------------------------------------------------

    def _tick(self, k: int, deadline: float) -> None:
        """One control period: stop, start, staleness and the placement's answer onto the
        sequencer's hooks, then one sequencer tick at ``deadline`` (node clock s), published."""
        self._deadline = deadline  # the stamp of everything this tick publishes
        with self._lock:
            stops, start = self._stops, self._start_requested
            self._start_requested = False
            joints = dict(self._joints)
            obs = self._object
            episode, token = self._episode, self._token
        try:
            newest = max((e.received_perf for e in joints.values()), default=None)
            lost, lost_changed = self._cell.check(newest, time.perf_counter())
            if self._stopped.is_set() or stops != self._seen_stops:
                self._seen_stops = stops
                self._place_future = None
                if start:
                    self.get_logger().warning(f"episode {episode} not started: the safety stop came first")
                    self._end(episode, token, "stopped", "the safety stop came before the episode began")
                elif self._seq.active:
                    self._end(self._episode, self._cmd_token, "stopped",
                              f"the safety stop latched in phase {self.phase.value}")
                self._seq.stop(latched=self._stopped.is_set())
                if lost_changed:
                    self._report_cell(lost)
                return
            self._seq.release()  # a released stop: idle
            if lost:
                if lost_changed:
                    self._lose_cell(lost)
                if start:
                    self._end(episode, token, "cell lost", lost)
                return
            if lost_changed:
                self._seq.clear_fault()  # back to idle, nothing held: a new start is needed
                self._report_cell(lost)
            if start:
                self._begin(joints, deadline, episode, token)
            if self._seq.active:
                stale = self._stale(joints, self._clock.now())
                if stale:
                    self._fail(stale)
                    return
            if self.phase is Phase.PLACE and not self._poll_place():
                return
            self._run_sequencer(joints, obs)
        finally:
            self._report_phase()

    def _stale(self, joints: dict, now: float) -> str:
        """Why the joint states are stale (one group behind the others, see the module docstring),
        or "" if they are fresh. (No group at all: the cell is lost, :class:`CellWatch`.)"""
        ages = {key: now - e.received_clock for key, e in joints.items()}
        newest_key = min(ages, key=ages.get)
        newest = ages[newest_key]
        (s, g), age = max(ages.items(), key=lambda item: item[1])
        if age - newest > self.stale_s:
            return (f"joint states of {s}/{g} ({self.topics.joint_states[(s, g)]}) are stale: last {age:.3f} s ago, "
                    f"{age - newest:.3f} s behind {'/'.join(newest_key)} (limit {self.stale_s:.3f} s = "
                    f"{self.stale_s / self.period_s:g} periods)")
        return ""

    def _report_phase(self) -> None:
        """Diagnostics right away when the phase changed."""
        if self.phase is not self._reported_phase:
            self._reported_phase = self.phase
            self._publish_diagnostics()

    def _fail(self, reason: str) -> None:
        """Abort the episode (FAULT): ``reason`` goes to the sequencer, the log, the diagnostics and
        ``episode_end``."""
        self._fault_episode = self._episode
        self._seq.abort(reason)
        self._after_fault()

    def _after_fault(self) -> None:
        self._place_future = None
        self.get_logger().error(self.fault)
        self._end(self._episode, self._cmd_token, "fault", self.fault)

    def _lose_cell(self, lost: str) -> None:
        """The cell is lost: stop commanding (abort a running episode, drop the idle hold), say so."""
        self._place_future = None
        if self._seq.active:
            self._end(self._episode, self._cmd_token, "cell lost", lost)
            self._fault_episode = self._episode
            self._seq.abort(lost)
        elif self.phase is Phase.IDLE:
            self._seq.stop(latched=False)  # IDLE, nothing held
        self._report_cell(lost)

    def _report_cell(self, lost: str) -> None:
        if lost:
            self.get_logger().error(f"{lost}: no more commands; a new start is needed when the joint states come back")
        else:
            self.get_logger().warning("the cell's joint states are back: idle, commanding nothing until the next start")
        self._publish_diagnostics()

    def _end(self, episode: int, token: str, reason: str, detail: str = "") -> None:
        """Publish ``episode_end`` for ``episode`` (once per episode; later calls are ignored)."""
        if episode <= self._ended:
            return
        self._ended = episode
        msg = episode_end_msg(episode, token, reason, detail)
        self.episode_ends.append({"episode": episode, "token": token, "reason": reason, "detail": detail})
        self._end_pub.publish(msg)
        self.get_logger().info(f"episode {episode} ended: {reason}" + (f": {detail}" if detail else ""))

    def _begin(self, joints, deadline: float, episode: int, token: str) -> None:
        goal = self.cfg.goal.draw(self._goal_rng)
        for c in (self.controller, self._dry):
            c.set_goal(goal)
        ok, why = self._seq.start(deadline, np.concatenate([joints[k].position for k in KEYS]))
        if ok:  # (the sequencer cleared the fault)
            self._place_future = None
            self._cmd_token = token
        else:
            self.get_logger().warning(f"episode {episode} not started: {why}")
            self._end(episode, token, "fault", f"not started: {why}")

    def _request_place(self) -> None:
        """The sequencer asks for the object: ``/handover/twin/place_object`` if it is served (only the
        twin serves it; on hardware the operator has placed the object: acknowledged right away)."""
        if self._place_client.service_is_ready():
            self._place_future = self._place_client.call_async(Trigger.Request())
            self._place_wall0 = time.monotonic()
        else:
            self._place_future = None
            self._seq.placed(True, f"{self.topics.twin_place_object} is not served: the operator placed the object")

    def _poll_place(self) -> bool:
        """Hand the placement's answer to the sequencer once it came; False if the episode was aborted
        (a failed placement, or no answer within :data:`PLACE_TIMEOUT_S` wall-clock s)."""
        fut = self._place_future
        if fut is None:
            return True
        if not fut.done():
            if time.monotonic() - self._place_wall0 > PLACE_TIMEOUT_S:
                self._fail(f"{self.topics.twin_place_object} did not answer within {PLACE_TIMEOUT_S:g} s")
                return False
            return True
        self._place_future = None
        res = fut.result()
        if res is None or not res.success:
            self._fault_episode = self._episode
            self._seq.placed(False, f"{self.topics.twin_place_object}: {'no response' if res is None else res.message}")
            self._after_fault()  # (ends the episode: fault)
            return False
        self._seq.placed(True, res.message)
        return True

    def _run_sequencer(self, joints: dict, obs: ObjectObservation) -> None:
        """One sequencer tick on the newest inputs, and what it says published. A fault of the policy
        or its inputs (an exception) stops the commanding and is reported."""
        q = np.concatenate([joints[k].position for k in KEYS]) if len(joints) == len(KEYS) else None
        efforts = None
        if self.controller.needs_efforts and q is not None:
            missing = [k for k in KEYS if joints[k].effort is None]
            if missing and self._seq.phase in (Phase.WARMUP, Phase.EPISODE):  # the phases that run the policy
                self._fail("the bundle's property estimator needs joint efforts, but "
                           + ", ".join(self.topics.joint_states[k] for k in missing) + " carry none")
                return
            efforts = None if missing else np.concatenate([joints[k].effort for k in KEYS])
        try:
            c0 = time.perf_counter()
            out = self._seq.tick(self._deadline, q, obs, efforts)
            c1 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - a fault of the policy or its inputs: stop commanding, report it
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._publish(out, joints, c1 - c0, (q, obs, efforts))
        if out.request_place and not self._stopped.is_set():  # never place the object under a stop
            self._request_place()

    def _publish(self, out: SequencerTick, joints: dict, compute_s: float, inputs=None) -> None:
        """The tick's commands, predicted goal, step record and episode end, as the sequencer says.
        (The end is reported even if a stop silenced its commands, as before the sequencer.) A
        non-finite predicted goal aborts the episode before anything of the tick is published.
        ``inputs``: ``(q, obs, efforts)`` the sequencer was given, for the step record."""
        if out.result is not None:
            problem = command_problem(np.asarray(out.result.predicted_goal_world, dtype=float).ravel())
            if problem:
                self._fail(f"the predicted goal is not finite: {problem}")
                return
        if out.targets is not None:
            sent_all = self._publish_commands(out.targets)
            if self._seq.phase is Phase.FAULT or (not sent_all and not out.done):
                return
            if sent_all and out.step is not None:  # a policy step: its record, timing records
                sent = time.perf_counter()
                self._publish_step(out, inputs)
                self._latency.append(sent - max(e.received_perf for e in joints.values()))
                self._latency_oldest.append(sent - min(e.received_perf for e in joints.values()))
                self._compute.append(compute_s)
        if out.result is not None and not self._stopped.is_set():
            self._goal_pub.publish(point_msg(self._deadline, out.result.predicted_goal_world))
        if out.done:
            self._done_pub.publish(UInt32(data=self._episode))
            self._end(self._episode, self._cmd_token, "done")
            self.get_logger().info(f"episode {self._episode} done ({self.cfg.episode_steps} steps); holding the last targets")

    def _publish_step(self, out: SequencerTick, inputs) -> None:
        """``/handover/policy/step``: what this policy step saw and did (:mod:`handover.runtime.step_topic`),
        so that a recording replays it exactly."""
        q, obs, efforts = inputs
        obj = np.asarray(obs.position, dtype=float) if obs.valid else np.full(3, np.nan)
        predicted = np.ravel(out.result.predicted_goal_world) if out.result is not None else np.full(3, np.nan)
        record = PolicyStepRecord(self._deadline, self._cmd_token, int(out.step), np.asarray(q, dtype=float), obj,
                                  bool(obs.valid), np.asarray(self.controller.goal, dtype=float),
                                  np.asarray(out.targets, dtype=float), predicted, efforts)
        self._step_pub.publish(step_msg(self._all_names, record))

    def _publish_commands(self, targets: np.ndarray) -> bool:
        """The four joint commands of 44 targets (contract order, rad), with the episode's token.
        Returns False (and publishes nothing more) as soon as the stop is latched: checked right
        before each publish. Targets that are not 44 finite numbers are never published: the
        episode is aborted (:meth:`_fail`) and nothing of the tick goes out."""
        problem = command_problem(targets, self._all_names)
        if problem:
            self._fail(f"refused to publish a joint command: {problem}")
            return False
        stamp, token = self._deadline, self._cmd_token
        i = 0
        for key in KEYS:
            names = self.names[key]
            msg = joint_state_msg(names, stamp, targets[i:i + len(names)], frame_id=token)
            i += len(names)
            if self._stopped.is_set():
                return False
            self._cmd_pubs[key].publish(msg)
            self.last_command_perf = time.perf_counter()
        return True

    # ------------------------------------------------------------------------------------------
    # diagnostics and timing
    # ------------------------------------------------------------------------------------------

    def _state(self) -> tuple[NodeState, str]:
        if self._stopped.is_set():
            return NodeState.ESTOPPED, ("the safety stop is latched (or not yet released by the safety node since "
                                        "this node started); no commands")
        if self._cell.lost:
            return NodeState.FAULT, self._cell.lost
        phase = self.phase
        if phase is Phase.FAULT:
            return NodeState.FAULT, self.fault
        if phase is Phase.IDLE:
            return NodeState.RUNNING, "idle, holding the last targets" if self._seq.hold_targets is not None else "idle"
        if phase is Phase.ESTOPPED:
            return NodeState.RUNNING, "idle (stop released)"
        return NodeState.RUNNING, f"episode {self._episode}: {phase.value}"

    def _publish_diagnostics(self) -> None:
        """Publish the state now (the 1 Hz timer, and every change)."""
        state, detail = self._state()
        stats = self._loop.stats
        values = {"phase": self.phase.value, "episode": self._episode, "episode_token": self._token,
                  "overruns": stats.overruns, "skipped": stats.skipped, "wakeups": len(stats.wakeups),
                  **self.stop_listener.values()}
        if self.episode_ends:
            end = self.episode_ends[-1]
            values["last_episode_end"] = f"episode {end['episode']}: {end['reason']}" + (
                f": {end['detail']}" if end["detail"] else "")
        with self._lock:
            values.update({f"input error {t}": p for t, p in self._input_errors.items()})
            values.update(self._implausible.values())
        with self._diag_lock:
            self._diag_pub.publish(diagnostics_msg(NODE_NAME, state, self._clock.now(), detail, values))

    def timing(self) -> dict:
        """Timing records so far (s): ``state_to_command_s`` per EPISODE tick (receive of the newest
        joint state used -> publish of the last joint command, perf_counter), ``state_to_command_oldest_s``
        (the same from the oldest of the four groups), ``compute_s`` (the sequencer's tick, i.e. the
        policy step), ``wakeups_s`` (every tick, node clock), ``jitter_s`` (|interval - period| between
        wake-ups), ``overruns``, ``skipped`` (counts)."""
        stats = self._loop.stats
        return {
            "state_to_command_s": np.asarray(self._latency, dtype=float),
            "state_to_command_oldest_s": np.asarray(self._latency_oldest, dtype=float),
            "compute_s": np.asarray(self._compute, dtype=float),
            "wakeups_s": np.asarray(list(stats.wakeups), dtype=float),
            "jitter_s": stats.jitter_s(),
            "overruns": int(stats.overruns),
            "skipped": int(stats.skipped),
        }
