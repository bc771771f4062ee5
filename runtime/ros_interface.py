"""The cell's ROS 2 interface in one place: topic and service names, QoS, message conversions,
node states and their diagnostics. Every node imports its names and QoS from here.

Topics (names from the cell config's ``topics:``; ``{side}`` thrower|catcher, ``{group}`` arm|hand):

=========================================  ==============================  ===========================  ============================
name                                       type                            QoS                          rate
=========================================  ==============================  ===========================  ============================
/handover/{side}/{group}/joint_states      sensor_msgs/JointState          best effort, keep last 1     joint_state_rate_hz (100)
/handover/{side}/{group}/joint_commands    sensor_msgs/JointState          reliable, keep last 1        control rate
/handover/object/position                  geometry_msgs/PointStamped      best effort, keep last 1     tracker rate
/handover/policy/predicted_goal            geometry_msgs/PointStamped      reliable, keep last 1        control rate
/handover/policy/step                      sensor_msgs/JointState (named)  reliable, keep last 1        per policy step
/handover/estop                            std_msgs/Bool                   reliable, transient local    on event
/handover/safety/latched                   std_msgs/Bool                   reliable, transient local    on change
/handover/policy/episode_start             std_msgs/String (token)         reliable, keep last 10,      per start
                                                                           volatile
/handover/policy/episode_done              std_msgs/UInt32                 reliable, keep last 10       per episode
/handover/policy/episode_end               std_msgs/String (JSON)          reliable, keep last 10       per episode
/handover/twin/outcome                     std_msgs/String                 reliable, keep last 10       per episode
/diagnostics                               diagnostic_msgs/DiagnosticArray reliable, keep last 10       1 Hz + changes
/clock                                     rosgraph_msgs/Clock             best effort, keep last 1     physics step (not real time)
=========================================  ==============================  ===========================  ============================

The latch topic is written only by the safety node, which starts latched; ``true`` from anyone
stops, ``false`` releases only when the safety node is its only publisher (:mod:`handover.runtime.estop`).

Services (std_srvs/Trigger): ``/handover/start`` (policy node), ``/handover/estop/reset`` (safety
node), ``/handover/twin/place_object`` (twin node: the object back at its start, like an operator).

Joint commands carry position targets (rad) in ``position``, names as in the cell config, and the
episode they belong to in ``header.frame_id`` (the token ``"<policy instance id>/<episode n>"``,
:mod:`handover.runtime.episode_token`); a driver follows only the tokens of the episode whose start
it received on ``episode_start`` while it was up. ``episode_end`` says why each started episode
ended: JSON ``{"episode": n, "token": ..., "reason": "done"|"stopped"|"fault"|"cell lost",
"detail": ...}`` (:func:`episode_end_msg`), once per episode; ``episode_done`` (the episode
number) is sent only for ``done``, for the twin's judgement. Joint
states carry position (rad), velocity (rad/s) and effort (N*m) where measured (empty otherwise).
Stamps are the time of the measurement on the node's clock (sim time under ``use_sim_time``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from handover.runtime.cell_config import CellConfig

SIDES = ("thrower", "catcher")
GROUPS = ("arm", "hand")
SAFETY_LATCHED_TOPIC = "/handover/safety/latched"
EPISODE_DONE_TOPIC = "/handover/policy/episode_done"
EPISODE_START_TOPIC = "/handover/policy/episode_start"
EPISODE_END_TOPIC = "/handover/policy/episode_end"
EPISODE_END_REASONS = ("done", "stopped", "fault", "cell lost")
TWIN_OUTCOME_TOPIC = "/handover/twin/outcome"
TWIN_PLACE_OBJECT_SERVICE = "/handover/twin/place_object"
DIAGNOSTICS_TOPIC = "/diagnostics"
WORLD_FRAME = "world"


@dataclass(frozen=True)
class Topics:
    """Resolved names for one cell config."""

    joint_states: dict[tuple[str, str], str]
    joint_commands: dict[tuple[str, str], str]
    object_position: str
    predicted_goal: str
    start: str
    estop: str
    estop_reset: str
    safety_latched: str = SAFETY_LATCHED_TOPIC
    episode_done: str = EPISODE_DONE_TOPIC
    episode_start: str = EPISODE_START_TOPIC
    episode_end: str = EPISODE_END_TOPIC
    twin_outcome: str = TWIN_OUTCOME_TOPIC
    twin_place_object: str = TWIN_PLACE_OBJECT_SERVICE
    diagnostics: str = DIAGNOSTICS_TOPIC

    @staticmethod
    def from_config(cfg: CellConfig) -> "Topics":
        t = cfg.topics
        keys = [(s, g) for s in SIDES for g in GROUPS]
        return Topics(
            joint_states={k: t.joint_states.format(side=k[0], group=k[1]) for k in keys},
            joint_commands={k: t.joint_commands.format(side=k[0], group=k[1]) for k in keys},
            object_position=t.object_position,
            predicted_goal=t.predicted_goal,
            start=t.start,
            estop=t.estop,
            estop_reset=t.estop_reset,
        )


def joint_names(cfg: CellConfig, side: str, group: str) -> tuple[str, ...]:
    """The joint names of one group, as in the cell config (e.g. ``thrower/joint1``)."""
    return tuple(getattr(getattr(cfg, side), group).joints)


# --------------------------------------------------------------------------------------------
# QoS
# --------------------------------------------------------------------------------------------


def qos_sensor():
    """Measurements: the newest one counts, a lost one is replaced by the next."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


def qos_command():
    """Commands and predictions: delivered, newest only."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def qos_latched(depth: int = 1):
    """The stop and its latch: reliable and transient local, so a node that starts late still sees it.
    Publishers keep the last message (depth 1); subscribers queue 10 so a quick true-false pair is
    not merged into its last message."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_episode_start():
    """Episode start announcements: reliable, keep last 10 and VOLATILE on purpose: a driver that
    starts later must never learn of an episode that is already running."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def qos_events():
    """Episode events, outcomes and diagnostics: reliable, a short history."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def stamp_to_s(stamp) -> float:
    """``builtin_interfaces/Time`` -> seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def s_to_stamp(t: float):
    from builtin_interfaces.msg import Time

    ns = int(round(t * 1e9))  # whole nanoseconds first: 0.999999999999997 s is 1 s, not 0 s
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def joint_state_msg(names: Sequence[str], stamp_s: float, position, velocity=None, effort=None, frame_id: str = ""):
    """A ``sensor_msgs/JointState``; velocity and effort are left empty when not measured.
    ``frame_id``: a joint command's episode token (empty for joint states)."""
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in position]
    msg.velocity = [] if velocity is None else [float(v) for v in velocity]
    msg.effort = [] if effort is None else [float(v) for v in effort]
    return msg


class MessageError(ValueError):
    """A received message does not fit the cell (wrong names or lengths); names topic and values."""


def positions_by_name(msg, names: Sequence[str], topic: str) -> np.ndarray:
    """The positions of ``names`` (in that order) from a JointState; raises :class:`MessageError`
    when lengths differ, a name appears twice (which value counts would be a guess) or one of
    ``names`` is missing. Other names in the message are ignored (a joint state may carry more).

    Joint *commands* are not parsed here: a driver hands names and positions to its device's
    command gate (:meth:`~handover.drivers.joint_group.JointGroup.command_by_name`), which also
    refuses names that are not in the group."""
    if len(msg.position) != len(msg.name):
        raise MessageError(f"{topic}: {len(msg.name)} names but {len(msg.position)} positions")
    if len(set(msg.name)) != len(msg.name):
        duplicates = sorted({n for n in msg.name if list(msg.name).count(n) > 1})
        raise MessageError(f"{topic}: duplicate joint names {duplicates} (got {list(msg.name)})")
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise MessageError(f"{topic}: joints {missing} missing (got {list(msg.name)})")
    return np.array([msg.position[index[n]] for n in names], dtype=float)


def episode_end_msg(episode: int, token: str, reason: str, detail: str = ""):
    """The ``std_msgs/String`` for ``episode_end``: JSON with ``episode``, ``token``, ``reason``
    (one of :data:`EPISODE_END_REASONS`) and ``detail`` (why, for stop, fault and cell lost)."""
    import json

    from std_msgs.msg import String

    if reason not in EPISODE_END_REASONS:
        raise ValueError(f"episode_end_msg: reason {reason!r}: expected one of {', '.join(EPISODE_END_REASONS)}")
    return String(data=json.dumps({"episode": int(episode), "token": token, "reason": reason, "detail": detail}))


def parse_episode_end(msg) -> dict:
    """The dict of an ``episode_end`` message; raises :class:`MessageError` if it is not one."""
    import json

    try:
        d = json.loads(msg.data)
        ok = isinstance(d, dict) and d.get("reason") in EPISODE_END_REASONS and isinstance(d.get("episode"), int)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MessageError(f"{EPISODE_END_TOPIC}: not an episode end: {msg.data!r}")
    return d


def point_msg(stamp_s: float, xyz, frame: str = WORLD_FRAME):
    from geometry_msgs.msg import PointStamped

    msg = PointStamped()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.header.frame_id = frame
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in xyz)
    return msg


# --------------------------------------------------------------------------------------------
# Node states and diagnostics
# --------------------------------------------------------------------------------------------


class NodeState(str, enum.Enum):
    """What ``/diagnostics`` reports for each node."""

    RUNNING = "running"  # doing its job (driver: following commands; policy: ready or in an episode)
    HOLDING = "holding"  # driver holding its position (no commands yet, or the episode ended)
    ESTOPPED = "estopped"  # the safety stop is latched
    FAULT = "fault"  # a device or input fault; see the message


def diagnostics_msg(node_name: str, state: NodeState, stamp_s: float, detail: str = "", values: Optional[dict] = None):
    """A ``diagnostic_msgs/DiagnosticArray`` with this node's one status. Level: OK when running or
    holding, WARN when estopped, ERROR on a fault. ``message`` starts with the state's name."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level = {NodeState.RUNNING: DiagnosticStatus.OK, NodeState.HOLDING: DiagnosticStatus.OK,
             NodeState.ESTOPPED: DiagnosticStatus.WARN, NodeState.FAULT: DiagnosticStatus.ERROR}[state]
    status = DiagnosticStatus(level=level, name=node_name, hardware_id="handover",
                              message=state.value + (f": {detail}" if detail else ""))
    status.values = [KeyValue(key="state", value=state.value)] + [
        KeyValue(key=str(k), value=str(v)) for k, v in (values or {}).items()]
    arr = DiagnosticArray()
    arr.header.stamp = s_to_stamp(stamp_s)
    arr.status = [status]
    return arr


def call_trigger(client, timeout: float, who: str = ""):
    """Call a ``std_srvs/Trigger`` service and wait for its response, from a thread other than the
    one spinning the client's node (the executor delivers the response). ``timeout`` (s, wall) for
    the service to appear and again for its answer; either missing is an
    :class:`~handover.runtime.errors.InputError` naming the service (``who`` prefixes the message)."""
    import time

    from std_srvs.srv import Trigger

    from handover.runtime.errors import InputError

    prefix = f"{who}: " if who else ""
    if not client.wait_for_service(timeout_sec=timeout):
        raise InputError(f"{prefix}service {client.srv_name} did not appear within {timeout:g} s")
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise InputError(f"{prefix}service {client.srv_name} did not answer within {timeout:g} s")
        time.sleep(0.005)
    return future.result()
