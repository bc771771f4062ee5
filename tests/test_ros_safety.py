"""The safety stop over real DDS: latch rules, stop latency, driver faults, the tracker's points;
who may release a stop (only the safety node, which starts latched) and which commands a driver
follows (only those of the episode whose start it received).

Nodes under test and a probe node (the operator / policy side) spin in background threads, one
single-threaded executor per node; the test thread publishes on the probe and waits on what the
nodes did.
Devices are mirrors (drivers/mirror.py) that record every target they are sent. Units: rad, m, s.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Optional

import numpy as np
import pytest

from handover.runtime.episode_token import CellWatch, EpisodeArming, command_problem, make_token
from handover.runtime.estop import RELEASE_PENDING_S, EstopLatch, StopRules, release_check

# -- the latch rules, pure ------------------------------------------------------------------------


def test_latch_starts_latched_and_only_a_reset_after_false_releases():
    latch = EstopLatch()
    assert latch.latched and latch.stops == 0, "a (re)started safety node never releases by itself"
    assert latch.on_estop(False) is False and latch.latched
    assert latch.request_reset() == (True, "released: the safety stop is reset")
    assert not latch.latched


def test_latch_true_latches_once_and_counts_stops():
    latch = EstopLatch(latched=False)
    assert latch.on_estop(True) is True
    assert latch.on_estop(True) is False  # already latched
    assert latch.latched and latch.stops == 1
    latch.on_estop(False)
    assert latch.latched, "false alone never releases"


def test_latch_reset_refused_while_estop_true():
    latch = EstopLatch()
    latch.on_estop(True)
    accepted, message = latch.request_reset()
    assert not accepted and latch.latched
    assert "refused" in message and "true" in message


def test_latch_reset_after_false_releases_and_next_true_latches_again():
    latch = EstopLatch(latched=False)
    latch.on_estop(True)
    latch.on_estop(False)
    assert latch.request_reset() == (True, "released: the safety stop is reset")
    assert not latch.latched
    assert latch.on_estop(True) is True and latch.stops == 2


def test_latch_reset_when_not_latched_is_accepted_and_changes_nothing():
    latch = EstopLatch(latched=False)
    accepted, message = latch.request_reset()
    assert accepted and "not latched" in message and not latch.latched


def test_latch_refuses_while_a_true_came_after_the_false():
    latch = EstopLatch(latched=False)
    latch.on_estop(True)
    latch.on_estop(False)
    latch.on_estop(True)
    assert latch.request_reset()[0] is False and latch.latched and latch.stops == 1


SAFETY = ("safety", "/")


def test_release_check_only_the_safety_node_may_release():
    assert release_check([SAFETY]) == ("release", "")
    assert release_check([SAFETY, SAFETY])[0] == "release"  # two instances of it (a restart under way)
    verdict, why = release_check([SAFETY, ("rogue", "/")])
    assert verdict == "refused" and "/rogue" in why
    assert release_check([("safety", "/other_cell")])[0] == "refused"  # same name, other namespace
    assert release_check([])[0] == "pending"  # nobody known yet: ask again
    assert release_check([SAFETY, ("_NODE_NAME_UNKNOWN_", "_NODE_NAMESPACE_UNKNOWN_")])[0] == "pending"
    assert release_check([("_NODE_NAME_UNKNOWN_", ""), ("rogue", "/")])[0] == "refused"


def test_stop_rules_true_from_anyone_stops_false_only_from_the_safety_node_releases():
    rules = StopRules()
    assert rules.on_latched(True, [], 0.0) == "stop" and rules.stopped
    assert rules.on_latched(True, [], 0.0) == "", "once per transition"
    assert rules.on_latched(False, [SAFETY, ("rogue", "/")], 0.1) == ""
    assert rules.stopped and rules.releases_refused == 1 and "/rogue" in rules.last_refusal
    assert rules.on_latched(False, [SAFETY], 0.2) == "release" and not rules.stopped and rules.releases == 1
    # the node's own estop true makes the safety node's stale false count for nothing
    assert rules.on_estop(True) and rules.stopped
    assert rules.on_latched(False, [SAFETY], 0.3) == "" and rules.stopped
    rules.on_estop(False)
    assert rules.on_latched(False, [SAFETY], 0.4) == "release"


def test_stop_rules_a_release_from_an_unidentified_publisher_waits_then_counts_as_refused():
    rules = StopRules(initially_stopped=True)
    assert rules.on_latched(False, [("_NODE_NAME_UNKNOWN_", "")], 0.0) == ""
    assert rules.pending_since == 0.0 and rules.stopped
    assert rules.recheck([SAFETY], 0.1) == "release" and not rules.stopped  # identified a moment later
    rules = StopRules(initially_stopped=True)
    rules.on_latched(False, [], 0.0)
    assert rules.recheck([], RELEASE_PENDING_S + 0.1) == "" and rules.stopped and rules.releases_refused == 1
    assert rules.pending_since is None
    rules.on_latched(False, [], 5.0)
    assert rules.on_latched(True, [], 5.1) == "" and rules.pending_since is None, "a true drops the pending release"
    assert rules.recheck([SAFETY], 5.2) == "" and rules.stopped


def test_episode_arming_follows_only_the_started_episode():
    arming = EpisodeArming()
    token = make_token("abc", 1)
    assert token == "abc/1"
    assert not arming.accepts(token), "a driver that just started follows nothing"
    assert "no episode started" in arming.why_ignored(token)
    assert not arming.on_start("abc/2", stopped=True) and arming.armed is None, "a start while stopped arms nothing"
    assert arming.on_start(token, stopped=False)
    assert arming.accepts(token) and not arming.accepts("abc/0") and not arming.accepts("")
    assert arming.commands_ignored == 3 and arming.last_ignored == ""
    arming.disarm()  # a safety stop
    assert not arming.accepts(token), "after a stop: nothing until the next start"
    with pytest.raises(ValueError):
        make_token("a/b", 1)


def test_command_problem_names_the_first_non_finite_target():
    names = ["a", "b", "c"]
    assert command_problem([0.0, 1.0, -2.0], names) is None
    problem = command_problem([0.0, np.nan, np.inf], names)
    assert "b" in problem and "2 non-finite" in problem
    assert "shape" in command_problem([0.0, 1.0], names)


def test_cell_watch_is_lost_after_silence_and_back_when_states_return():
    watch = CellWatch(0.3)
    assert watch.check(None, 10.0) == ("", False), "a cell never seen is not lost"
    assert watch.check(1.0, 1.2) == ("", False)
    lost, changed = watch.check(1.0, 1.35)
    assert changed and lost.startswith("cell lost: no joint states for 0.35 s")
    assert watch.check(1.0, 1.5) == (lost, False), "one message per loss"
    assert watch.check(1.6, 1.61) == ("", True)


# -- over DDS -----------------------------------------------------------------------------------

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
import rclpy.time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402
from sensor_msgs.msg import JointState as JointStateMsg  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from handover.drivers.joint_group import JointGroupInfo  # noqa: E402
from handover.drivers.joint_group_node import JointGroupNode  # noqa: E402
from handover.drivers.mirror import MirrorJointGroup, MirrorObjectTracker  # noqa: E402
from handover.drivers.object_tracker_node import ObjectTrackerNode  # noqa: E402
from handover.runtime.cell_config import load_cell_config  # noqa: E402
from handover.runtime.ros_interface import (  # noqa: E402
    NodeState,
    Topics,
    joint_names,
    joint_state_msg,
    qos_command,
    qos_episode_start,
    qos_events,
    qos_latched,
    qos_sensor,
    stamp_to_s,
)
from handover.runtime.safety_node import SafetyNode  # noqa: E402
import support  # noqa: E402
from support import Spinners  # noqa: E402

CFG = load_cell_config()
TOPICS = Topics.from_config(CFG)
PERIOD_S = CFG.control_period_s  # the control period (50 ms at 20 Hz)
TIMEOUT_S = 3.0


class RecordingMirror(MirrorJointGroup):
    """A mirror that keeps every target it was sent (commands and holds), in order."""

    def __init__(self, side: str, group: str, **kwargs):
        g = getattr(getattr(CFG, side), group)
        info = JointGroupInfo.from_config(g, provides_velocity=False, provides_effort=False,
                                          gate=CFG.gate, control_period_s=CFG.control_period_s)
        super().__init__(info, f"mirror/{side}/{group}", initial=np.array(g.default), **kwargs)
        self.sent: list[np.ndarray] = []

    def _on_command(self, targets, now):
        self.sent.append(np.array(targets))
        super()._on_command(targets, now)


wait_for = functools.partial(support.wait_for, timeout=TIMEOUT_S, poll=0.001)


class Probe(Node):
    """The outside world: estop publisher, command publishers, reset client, diagnostics log."""

    def __init__(self, context, name: str = "probe"):
        super().__init__(name, context=context)
        self.token = ""  # the episode the probe's commands belong to (start_episode)
        self.episodes = 0
        self.estop_pub = self.create_publisher(Bool, TOPICS.estop, qos_latched())
        self.start_pub = self.create_publisher(String, TOPICS.episode_start, qos_episode_start())
        self.command_pubs = {k: self.create_publisher(JointStateMsg, t, qos_command())
                             for k, t in TOPICS.joint_commands.items()}
        self.reset_client = self.create_client(Trigger, TOPICS.estop_reset)
        self._lock = threading.Lock()
        self.diagnostics: list[tuple[str, str, str]] = []  # (node name, state, message)
        self.points: list[PointStamped] = []
        self.joint_states: list[JointStateMsg] = []
        self.create_subscription(DiagnosticArray, TOPICS.diagnostics, self._on_diag, qos_events())

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for s in msg.status:
                state = next(kv.value for kv in s.values if kv.key == "state")
                self.diagnostics.append((s.name, state, s.message))

    def states_of(self, name: str, skip_stale: bool = False) -> list[str]:
        """The states ``name`` reported so far, consecutive repeats collapsed; with ``skip_stale``,
        without the command gate's holds of a stale stream (they depend on how long a test pauses)."""
        with self._lock:
            out = [s for n, s, m in self.diagnostics
                   if n == name and not (skip_stale and s == "holding" and "stale" in m)]
        return [s for i, s in enumerate(out) if i == 0 or s != out[i - 1]]

    def last_diag(self, name: str) -> Optional[tuple[str, str]]:
        with self._lock:
            mine = [(s, m) for n, s, m in self.diagnostics if n == name]
        return mine[-1] if mine else None

    def estop(self, value: bool) -> None:
        self.estop_pub.publish(Bool(data=value))

    def start_episode(self) -> str:
        """Announce a new episode (as the policy does when it accepts a start); later commands carry it."""
        self.episodes += 1
        self.token = make_token("probe", self.episodes)
        self.start_pub.publish(String(data=self.token))
        return self.token

    def command(self, side: str, group: str, targets, names=None, token=None) -> None:
        names = joint_names(CFG, side, group) if names is None else names
        token = self.token if token is None else token
        self.command_pubs[(side, group)].publish(joint_state_msg(names, 0.0, targets, frame_id=token))

    def reset(self) -> Trigger.Response:
        future = self.reset_client.call_async(Trigger.Request())
        wait_for(future.done, what="the reset service's answer")
        return future.result()

    def record(self, msg_type, topic: str, into: list, qos) -> None:
        def callback(msg):
            with self._lock:
                into.append(msg)
        self.create_subscription(msg_type, topic, callback, qos)


def spin_each(context, nodes: list) -> Spinners:
    """Each node in its own single-threaded executor and thread (the stop's callback waits at most
    behind that node's own short callbacks); :meth:`~support.Spinners.close` shuts everything down.

    Why not one ``MultiThreadedExecutor`` for all: with another process loading this 2-core machine,
    rclpy 7.1's multi-threaded executor let the stop wait 20-190 ms (p90 22-64 ms over 40 stops),
    one single-threaded executor per node stayed below 8 ms in the same conditions. The spin loops and
    the shutdown are :class:`support.Spinners`'."""
    spinners = Spinners()
    spinners.nodes += nodes
    for node in nodes:
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spinners.spin(executor, node.get_name())
    return spinners


@pytest.fixture
def spin(ros_context):
    """``spin(*nodes)`` starts them with a probe (returned); all are shut down after the test."""
    started: list[Spinners] = []

    def start(*nodes) -> Probe:
        probe = Probe(ros_context)
        started.append(spin_each(ros_context, [*nodes, probe]))
        return probe

    yield start
    for s in started:
        s.close()


def wait_connected(probe: Probe, drivers: list, safety: bool) -> None:
    """Discovery done: estop, start and command subscribers matched, the reset service up."""
    wait_for(lambda: probe.estop_pub.get_subscription_count() >= len(drivers) + int(safety),
             what="the estop subscribers", timeout=5.0)
    wait_for(lambda: probe.start_pub.get_subscription_count() >= len(drivers), what="the start subscribers", timeout=5.0)
    for d in drivers:
        wait_for(lambda: probe.command_pubs[(d.side, d.group)].get_subscription_count() >= 1,
                 what=f"{d.command_topic}'s subscriber", timeout=5.0)
    if safety:
        assert probe.reset_client.wait_for_service(timeout_sec=5.0), "the reset service did not appear"


def release(probe: Probe, safety, drivers: list) -> None:
    """The operator's release: estop false, then the reset service; waits for the drivers."""
    probe.estop(False)
    wait_for(lambda: not safety.latch.last_estop, what="the safety node to see false")
    answer = probe.reset()
    assert answer.success, answer.message
    wait_for(lambda: not safety.latch.latched and all(not d.stopped for d in drivers), what="the release")


def start_and_wait_armed(probe: Probe, drivers: list) -> str:
    token = probe.start_episode()
    wait_for(lambda: all(d.arming.armed == token for d in drivers), what=f"the drivers armed for {token}")
    return token


def moved(group, delta: float) -> np.ndarray:
    """The group's default pose moved by ``delta`` rad, clamped to its limits."""
    return np.clip(np.array(group.default) + delta, group.lower, group.upper)


# -------------------------------------------------------------------------------------------------


def test_latch_rules_over_dds(ros_context, spin):
    arm, hand = RecordingMirror("thrower", "arm"), RecordingMirror("catcher", "hand")
    safety = SafetyNode(CFG, context=ros_context)
    drivers = [JointGroupNode(arm, CFG, "thrower", "arm", context=ros_context),
               JointGroupNode(hand, CFG, "catcher", "hand", context=ros_context)]
    probe = spin(safety, *drivers)
    wait_connected(probe, drivers, safety=True)
    # the safety node starts latched: the drivers are stopped by its first message
    wait_for(lambda: all(d.state is NodeState.ESTOPPED for d in drivers), what="the drivers stopped by the initial latch")
    assert safety.latch.latched and safety.state is NodeState.ESTOPPED
    release(probe, safety, drivers)
    assert [d.state for d in drivers] == [NodeState.HOLDING] * 2, "after the release, before a start: holding"
    for name in ("thrower_arm_driver", "catcher_hand_driver", "safety"):  # the 1 Hz diagnostics
        wait_for(lambda: probe.last_diag(name) is not None and probe.last_diag(name)[0] in ("holding", "running"),
                 what=f"{name}'s diagnostics after the release", timeout=2.5)
    mark = {n: len(probe.states_of(n, skip_stale=True)) for n in ("thrower_arm_driver", "catcher_hand_driver", "safety")}

    # a command before any episode started: ignored, nothing moves
    sent0 = len(arm.sent)
    probe.command("thrower", "arm", moved(CFG.thrower.arm, 0.05))
    wait_for(lambda: drivers[0].arming.commands_ignored == 1, what="the command without a start to be ignored")
    assert len(arm.sent) == sent0 and drivers[0].commands_applied == 0

    # running, once the episode is started
    start_and_wait_armed(probe, drivers)
    target = moved(CFG.thrower.arm, 0.05)
    probe.command("thrower", "arm", target)
    wait_for(lambda: drivers[0].commands_applied == 1, what="the first command")
    assert drivers[0].state is NodeState.RUNNING
    np.testing.assert_allclose(arm.sent[-1], target)

    # stop: both drivers hold where they are
    sent_before = (len(arm.sent), len(hand.sent))
    probe.estop(True)
    wait_for(lambda: all(d.state is NodeState.ESTOPPED for d in drivers), what="both drivers estopped")
    assert (len(arm.sent), len(hand.sent)) == (sent_before[0] + 1, sent_before[1] + 1), "one hold each"
    np.testing.assert_allclose(arm.sent[-1], target)  # the measured position (the mirror has no lag)
    np.testing.assert_allclose(hand.sent[-1], CFG.catcher.hand.default)  # as measured, even outside the limits

    # commands while stopped are ignored: targets unchanged
    held = len(arm.sent)
    probe.command("thrower", "arm", moved(CFG.thrower.arm, -0.05))
    wait_for(lambda: drivers[0].commands_ignored == 1, what="the ignored command")
    assert len(arm.sent) == held and drivers[0].state is NodeState.ESTOPPED

    # reset while the estop is still true: refused with the reason
    wait_for(lambda: safety.latch.latched, what="the safety node to latch")
    answer = probe.reset()
    assert not answer.success and "refused" in answer.message and "true" in answer.message
    assert safety.latch.latched and all(d.stopped for d in drivers)

    # false, then reset: accepted, drivers hold until the next start and its commands
    probe.estop(False)
    wait_for(lambda: not safety.latch.last_estop, what="the safety node to see false")
    assert all(d.state is NodeState.ESTOPPED for d in drivers), "false alone releases nothing"
    answer = probe.reset()
    assert answer.success, answer.message
    wait_for(lambda: all(d.state is NodeState.HOLDING for d in drivers), what="both drivers holding after the reset")
    assert len(arm.sent) == held, "the release moves nothing"
    assert all(d.arming.armed is None for d in drivers), "the stop disarmed the episode"

    ignored = drivers[0].arming.commands_ignored
    probe.command("thrower", "arm", moved(CFG.thrower.arm, 0.02))  # the old episode's token: ignored
    wait_for(lambda: drivers[0].arming.commands_ignored == ignored + 1, what="the old episode's command to be ignored")
    assert len(arm.sent) == held and drivers[0].commands_applied == 1

    start_and_wait_armed(probe, drivers)
    target = moved(CFG.thrower.arm, 0.02)
    probe.command("thrower", "arm", target)
    wait_for(lambda: drivers[0].commands_applied == 2, what="the command of the new episode")
    assert drivers[0].state is NodeState.RUNNING
    np.testing.assert_allclose(arm.sent[-1], target)

    # diagnostics told the story (from the mark after the initial release; the state at the mark first)
    story = {"thrower_arm_driver": ["holding", "running", "estopped", "holding", "running"],
             "catcher_hand_driver": ["holding", "estopped", "holding"],
             "safety": ["running", "estopped", "running"]}
    # (a driver following no new command holds after 3 periods, "stale": not part of this story)
    wait_for(lambda: all(probe.states_of(n, skip_stale=True)[-1:] == states[-1:] for n, states in story.items()),
             what="the last diagnostics")

    def since_mark(n):
        states = probe.states_of(n, skip_stale=True)[mark[n] - 1:]
        return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    seen = {n: since_mark(n) for n in story}
    assert seen == story, f"diagnostics: expected {story}, saw {seen}"


STOPS_PER_ROUND = 20
LATENCY_ROUNDS = 3  # 1: the strict form, for a quiet machine


def test_stop_latency_below_one_control_period(ros_context, spin):
    """From the publish of ``true`` (``perf_counter`` just before) to the driver's hold (recorded by
    the node right after ``device.hold`` returned), with commands streaming at the control rate.

    Every stop of a round of 20 must be below one control period. This process shares a
    2-core machine: another process at full load delays Python threads by tens of ms, the node's
    code or not. So a round with an outlier is measured again, up to :data:`LATENCY_ROUNDS` rounds;
    a node that is slow by design (a stop waiting behind other callbacks) fails every round."""
    device = RecordingMirror("thrower", "hand")
    safety = SafetyNode(CFG, context=ros_context)
    driver = JointGroupNode(device, CFG, "thrower", "hand", context=ros_context)
    probe = spin(safety, driver)
    wait_connected(probe, [driver], safety=True)
    release(probe, safety, [driver])
    start_and_wait_armed(probe, [driver])

    streaming = threading.Event()
    streaming.set()

    def stream():  # a policy at the control rate
        k = 0
        while streaming.is_set():
            probe.command("thrower", "hand", moved(CFG.thrower.hand, 0.01 * (k % 5)))
            k += 1
            time.sleep(PERIOD_S)

    def one_stop() -> float:
        n, latched = len(driver.stop_events), safety.latch.stops
        t0 = time.perf_counter()
        probe.estop(True)
        wait_for(lambda: len(driver.stop_events) == n + 1, what=f"stop {n + 1}")
        latency = driver.stop_events[-1][1] - t0
        applied = driver.commands_applied
        wait_for(lambda: safety.latch.stops == latched + 1, what="the safety node to latch")
        probe.estop(False)
        wait_for(lambda: not safety.latch.last_estop, what="the safety node to see false")
        assert driver.commands_applied == applied, "a command was applied while stopped"
        assert probe.reset().success
        wait_for(lambda: not driver.stopped, what="the release")
        start_and_wait_armed(probe, [driver])  # the stop disarmed it: a new episode for the next stop
        return latency

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    rounds = []
    try:
        wait_for(lambda: driver.state is NodeState.RUNNING, what="the driver to follow the stream")
        for _ in range(LATENCY_ROUNDS):
            lat = np.array([one_stop() for _ in range(STOPS_PER_ROUND)])
            rounds.append(lat)
            print(f"\nstop latency, {len(lat)} stops: p50 {np.percentile(lat, 50) * 1e3:.2f} ms, "
                  f"p99 {np.percentile(lat, 99) * 1e3:.2f} ms, max {lat.max() * 1e3:.2f} ms "
                  f"(bound {PERIOD_S * 1e3:.1f} ms; load average {os.getloadavg()[0]:.2f})")
            if (lat < PERIOD_S).all():
                break
    finally:
        streaming.clear()
        streamer.join(1.0)
    assert any((lat < PERIOD_S).all() for lat in rounds), (
        f"every round had stops slower than one control period ({PERIOD_S * 1e3:.1f} ms); slow ones (ms): "
        + "; ".join(str(np.round(lat[lat >= PERIOD_S] * 1e3, 1).tolist()) for lat in rounds))
    assert driver.commands_ignored > 0, "the stream should have hit some stops"


def test_wrong_joint_names_fault_and_do_not_move(ros_context, spin):
    device = RecordingMirror("catcher", "arm")
    driver = JointGroupNode(device, CFG, "catcher", "arm", context=ros_context)
    probe = spin(driver)
    wait_connected(probe, [driver], safety=False)
    assert len(device.sent) == 1, "a driver that starts holds its measured position (one target)"
    np.testing.assert_allclose(device.sent[0], CFG.catcher.arm.default)
    start_and_wait_armed(probe, [driver])

    wrong = list(joint_names(CFG, "thrower", "arm"))  # the other arm's names
    probe.command("catcher", "arm", moved(CFG.catcher.arm, 0.1), names=wrong)
    wait_for(lambda: driver.state is NodeState.FAULT, what="the fault")
    assert len(device.sent) == 1 and driver.commands_rejected == 1
    assert TOPICS.joint_commands[("catcher", "arm")] in driver.detail and "thrower/joint1" in driver.detail
    wait_for(lambda: probe.last_diag("catcher_arm_driver") is not None
             and probe.last_diag("catcher_arm_driver")[0] == "fault", what="fault in the diagnostics")
    state, message = probe.last_diag("catcher_arm_driver")
    assert message.startswith("fault: ") and "missing" in message

    # a good command clears it
    target = moved(CFG.catcher.arm, 0.1)
    probe.command("catcher", "arm", target)
    wait_for(lambda: driver.state is NodeState.RUNNING, what="the recovery")
    np.testing.assert_allclose(device.sent[-1], target)

    # a target that is not finite: the same
    bad = target.copy()
    bad[2] = np.nan
    probe.command("catcher", "arm", bad)
    wait_for(lambda: driver.state is NodeState.FAULT, what="the fault on a NaN target")
    assert "catcher/joint3" in driver.detail and "not finite" in driver.detail
    # the refused command moved nothing: the gate held the measured position (one hold, sent either
    # for the refusal or, had the stream gone stale first, for that; the other then had nothing to do)
    assert len(device.sent) == 3 and driver.commands_rejected == 2
    np.testing.assert_allclose(device.sent[-1], target)
    assert all(np.isfinite(t).all() for t in device.sent)


def test_device_fault_is_reported_not_raised(ros_context, spin):
    device = RecordingMirror("thrower", "arm")
    driver = JointGroupNode(device, CFG, "thrower", "arm", context=ros_context)
    probe = spin(driver)
    wait_connected(probe, [driver], safety=False)
    sent0 = len(device.sent)  # (the hold at start-up)
    device.fail_next()  # the next read (the state timer's) fails like a lost cable
    wait_for(lambda: driver.state is NodeState.FAULT, what="the device fault")
    assert "injected I/O failure" in driver.detail
    probe.estop(True)  # a stop on a faulted device cannot hold: it stays a fault, and nothing crashes
    wait_for(lambda: driver.stopped, what="the stop")
    assert driver.state is NodeState.FAULT and len(device.sent) == sent0


def test_unconfigured_device_is_brought_up(ros_context):
    device = RecordingMirror("catcher", "hand")
    node = JointGroupNode(device, CFG, "catcher", "hand", context=ros_context)
    try:
        assert device.state.value == "active" and node.state is NodeState.HOLDING
    finally:
        node.destroy_node()


def test_bad_arguments_name_the_value(ros_context):
    with pytest.raises(ValueError, match="state_rate_hz.*-5"):
        JointGroupNode(RecordingMirror("thrower", "arm"), CFG, "thrower", "arm", context=ros_context, state_rate_hz=-5)
    with pytest.raises(ValueError, match="'left'"):
        JointGroupNode(RecordingMirror("thrower", "arm"), CFG, "left", "arm", context=ros_context)
    with pytest.raises(ValueError, match="catcher.arm.joints"):
        JointGroupNode(RecordingMirror("thrower", "arm"), CFG, "catcher", "arm", context=ros_context)


def test_driver_honours_use_sim_time(ros_context, spin):
    device = RecordingMirror("thrower", "arm")
    driver = JointGroupNode(device, CFG, "thrower", "arm", context=ros_context,
                            parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
    probe = spin(driver)
    clock_pub = probe.create_publisher(ClockMsg, "/clock", 10)
    probe.record(JointStateMsg, TOPICS.joint_states[("thrower", "arm")], probe.joint_states, qos_sensor())
    wait_for(lambda: clock_pub.get_subscription_count() >= 1, what="the driver's /clock subscriber", timeout=5.0)
    t = 500.0
    end = time.monotonic() + TIMEOUT_S
    while len(probe.joint_states) < 5 and time.monotonic() < end:
        t += PERIOD_S
        clock_pub.publish(ClockMsg(clock=rclpy.time.Time(seconds=t).to_msg()))
        time.sleep(0.005)
    assert len(probe.joint_states) >= 5, "no joint states under sim time"
    stamps = [stamp_to_s(m.header.stamp) for m in probe.joint_states]
    assert all(500.0 < s <= t + 1e-6 for s in stamps), f"stamps are not on the sim clock: {stamps}"


def test_tracker_publishes_new_valid_observations_with_capture_stamps(ros_context, spin):
    latency_s = 0.03

    def trajectory(t: float):
        """x = capture time (so a point names its own capture time); hidden every other 0.1 s."""
        return None if int(t * 10) % 2 else np.array([t, -0.5, 0.45])

    device = MirrorObjectTracker(trajectory, "mirror/tracker", latency_s=latency_s)
    node = ObjectTrackerNode(device, CFG, context=ros_context)
    assert node.period_s == pytest.approx(1.0 / CFG.twin.tracker.rate_hz)
    probe = spin(node)
    probe.record(PointStamped, TOPICS.object_position, probe.points, qos_sensor())
    wait_for(lambda: len(probe.points) >= 20 and node.invalid_frames > 0, what="tracked points and a hidden stretch")
    points = list(probe.points)
    assert all(p.header.frame_id == "world" for p in points)
    stamps = np.array([stamp_to_s(p.header.stamp) for p in points])
    xs = np.array([p.point.x for p in points])
    np.testing.assert_allclose(stamps, xs, rtol=0, atol=1e-6)  # stamped with the capture time
    assert (np.diff(stamps) > 0).all(), "each observation once"
    assert all(int(x * 10) % 2 == 0 for x in xs), "no point from a frame without the object"
    wait_for(lambda: probe.last_diag("object_tracker") is not None, what="the tracker's diagnostics", timeout=2.5)
    assert probe.last_diag("object_tracker")[0] == "running" and node.state is NodeState.RUNNING

    device.fail_next()  # a lost camera: reported, not raised
    wait_for(lambda: probe.last_diag("object_tracker")[0] == "fault", what="the tracker's fault in the diagnostics")
    assert "injected I/O failure" in node.detail


def test_tracker_moves_capture_times_from_a_device_clock_to_the_node_clock(ros_context, spin):
    """A device on its own clock (the twin in real time: simulation seconds from 0) is stamped on the
    node clock by the capture's age."""
    t_start = time.monotonic()
    device = MirrorObjectTracker(lambda t: np.array([t, -0.5, 0.45]), "mirror/tracker", latency_s=0.03)
    node = ObjectTrackerNode(device, CFG, context=ros_context, device_clock=lambda: time.monotonic() - t_start)
    probe = spin(node)
    probe.record(PointStamped, TOPICS.object_position, probe.points, qos_sensor())
    wait_for(lambda: len(probe.points) >= 10, what="tracked points")
    points = list(probe.points)
    offsets = np.array([stamp_to_s(p.header.stamp) - p.point.x for p in points])  # node clock - device clock
    assert np.ptp(offsets) < 0.005, f"capture ages were not kept: offsets {offsets}"
    assert abs(stamp_to_s(points[-1].header.stamp) - time.time()) < 1.0, "not on the node clock (wall time)"


# -- a stop survives everything but a reset (issue 11, point 4) ---------------------------------


def test_a_rogue_false_on_the_latch_topic_releases_nothing_and_a_rogue_true_stops(ros_context, spin):
    arm = RecordingMirror("thrower", "arm")
    safety = SafetyNode(CFG, context=ros_context)
    driver = JointGroupNode(arm, CFG, "thrower", "arm", context=ros_context)
    probe = spin(safety, driver)
    rogue = Node("rogue", context=ros_context)  # any node on the domain: a tool, a test, a bug
    rogue_pub = rogue.create_publisher(Bool, TOPICS.safety_latched, qos_latched())
    rogue_spin = spin_each(ros_context, [rogue])
    try:
        wait_connected(probe, [driver], safety=True)
        wait_for(lambda: driver.stopped, what="the initial latch")
        wait_for(lambda: rogue_pub.get_subscription_count() >= 1, what="the driver subscribing to the rogue", timeout=5.0)
        wait_for(lambda: any(i.node_name == "rogue" for i in driver.get_publishers_info_by_topic(TOPICS.safety_latched)),
                 what="the rogue on the driver's graph", timeout=5.0)

        rogue_pub.publish(Bool(data=False))
        wait_for(lambda: driver.stop_listener.rules.releases_refused >= 1, what="the rogue's release to be refused")
        assert driver.stopped and driver.state is NodeState.ESTOPPED
        assert "/rogue" in driver.stop_listener.rules.last_refusal
        probe.start_episode()
        probe.command("thrower", "arm", moved(CFG.thrower.arm, 0.05))
        time.sleep(0.3)
        assert driver.commands_applied == 0 and driver.arming.armed is None, "stopped: no start arms it, nothing moves"
        wait_for(lambda: "/rogue" in (probe.last_diag("safety") or ("", ""))[1], what="the safety node naming the rogue",
                 timeout=2.5)
        wait_for(lambda: "latch_releases_refused" in str(driver.stop_listener.values()), what="the refusal counted")

        # while the rogue is on the topic even the operator's reset releases nothing: kill it first
        refused = driver.stop_listener.rules.releases_refused
        probe.estop(False)
        wait_for(lambda: not safety.latch.last_estop, what="the safety node to see false")
        assert probe.reset().success and not safety.latch.latched
        wait_for(lambda: driver.stop_listener.rules.releases_refused > refused, what="the release refused while the rogue is there")
        assert driver.stopped
        rogue_spin.close()  # destroys the rogue node and its publisher
        wait_for(lambda: not any(i.node_name == "rogue"
                                 for i in driver.get_publishers_info_by_topic(TOPICS.safety_latched)),
                 what="the rogue gone from the graph", timeout=5.0)
        assert driver.stopped, "the rogue leaving releases nothing either"
        assert probe.reset().success  # the safety node publishes the released state again
        wait_for(lambda: not driver.stopped, what="the release by the safety node")
        assert driver.stop_listener.rules.releases >= 1

        # a true from anyone stops; only a reset releases again
        rogue2 = Node("rogue2", context=ros_context)
        pub2 = rogue2.create_publisher(Bool, TOPICS.safety_latched, qos_latched())
        rogue_spin = spin_each(ros_context, [rogue2])
        pub2.publish(Bool(data=True))
        wait_for(lambda: driver.stopped, what="the stop by another node's true")
    finally:
        rogue_spin.close()


def test_a_restarted_safety_node_starts_latched_and_releases_nothing(ros_context, spin):
    hand = RecordingMirror("catcher", "hand")
    driver = JointGroupNode(hand, CFG, "catcher", "hand", context=ros_context)
    probe = spin(driver)
    first = SafetyNode(CFG, context=ros_context)
    first_spin = spin_each(ros_context, [first])
    wait_connected(probe, [driver], safety=True)
    wait_for(lambda: driver.stopped, what="the initial latch")
    release(probe, first, [driver])
    start_and_wait_armed(probe, [driver])
    probe.command("catcher", "hand", moved(CFG.catcher.hand, 0.05))
    wait_for(lambda: driver.commands_applied == 1, what="the command")

    # a stop, then the safety node dies and comes back: the stop holds
    probe.estop(True)
    wait_for(lambda: driver.stopped and first.latch.latched, what="the stop")
    first_spin.close()
    probe.estop(False)  # the operator lets go of the button while the safety node is away
    second = SafetyNode(CFG, context=ros_context)
    second_spin = spin_each(ros_context, [second])
    try:
        assert second.latch.latched
        assert probe.reset_client.wait_for_service(timeout_sec=5.0)
        time.sleep(1.0)
        assert driver.stopped and driver.state is NodeState.ESTOPPED, "a restart released the stop"
        n = driver.commands_applied
        probe.command("catcher", "hand", moved(CFG.catcher.hand, 0.1))
        wait_for(lambda: driver.commands_ignored >= 1, what="the command while stopped")
        assert driver.commands_applied == n
        # the restarted node was released by nobody but the reset
        wait_for(lambda: not second.latch.last_estop, what="the new safety node to see false")
        assert probe.reset().success
        wait_for(lambda: not driver.stopped, what="the release by the reset")
        assert driver.arming.armed is None and driver.state is NodeState.HOLDING, "released: holds until a start"
    finally:
        second_spin.close()
