"""Implausible inputs to a running policy node over real DDS (issue 12, point 3): never used,
counted per topic and kind on /diagnostics, and the node keeps running.

The graph: the safety node (released by the test like the operator), the policy node with the
shipped reference bundle, and a feeder node that plays the drivers and the tracker: it publishes
the four joint states (the reset pose, stamped with the wall clock, which is the nodes' ROS clock
here) and object positions at 100 Hz from its own thread. What it publishes is switched per test:
an object 1e30 m away, a joint 10 rad beyond its hardware range, stamps an hour off.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from handover.runtime.cell_config import load_cell_config  # noqa: E402
from handover.runtime.contract import ContractSpec  # noqa: E402
from handover.runtime.plausibility import (  # noqa: E402
    OUTSIDE_JOINT_RANGE,
    OUTSIDE_WORKSPACE,
    STAMP_FUTURE,
    STAMP_PAST,
)
from handover.runtime.policy_node import PolicyNode  # noqa: E402
from handover.runtime.ros_interface import (  # noqa: E402
    GROUPS,
    SIDES,
    Topics,
    joint_state_msg,
    parse_episode_end,
    point_msg,
    qos_events,
    qos_latched,
    qos_sensor,
)
from handover.runtime.safety_node import SafetyNode  # noqa: E402
from support import Spinners, wait_for  # noqa: E402

CFG = load_cell_config()
PL = CFG.plausibility
TOPICS = Topics.from_config(CFG)
KEYS = tuple((s, g) for s in SIDES for g in GROUPS)
SPEC = ContractSpec.from_config(CFG)
RESET = np.clip(SPEC.default, SPEC.lower, SPEC.upper).astype(float)
SLICES = dict(zip(KEYS, (slice(0, 6), slice(6, 22), slice(22, 28), slice(28, 44))))  # contract order
HOUR = 3600.0
OBJ = TOPICS.object_position


class _Graph:
    """Safety node, policy node, feeder and probe in this process (see the module docstring).

    Feeder settings (``feed`` for the first message on, then :meth:`set`; read by its thread each
    cycle): :attr:`joints` (44 positions, rad, contract order), :attr:`stamp_offset` (s added to each
    group's stamp), :attr:`objects` (points published in turn, world m; empty: none) and
    :attr:`object_stamp_offset` (s)."""

    def __init__(self, context, networks, feed: dict, **policy_kw):
        self.lock = threading.Lock()
        self.joints = RESET.copy()
        self.stamp_offset = {k: 0.0 for k in KEYS}
        self.objects: list = []
        self.object_stamp_offset = 0.0
        self.set(**feed)  # from the first message on
        self.diagnostics: list[dict] = []  # the policy's status values, as dicts, in order
        self.goals: list[tuple] = []
        self.ends: list[dict] = []
        self.spinners = Spinners()
        executors = [SingleThreadedExecutor(context=context), MultiThreadedExecutor(num_threads=2, context=context)]

        self.safety = SafetyNode(CFG, context=context)
        self.feeder = Node("test_feeder", context=context)
        self.joint_pubs = {k: self.feeder.create_publisher(JointState, TOPICS.joint_states[k], qos_sensor()) for k in KEYS}
        self.object_pub = self.feeder.create_publisher(PointStamped, OBJ, qos_sensor())
        self.probe = Node("test_probe", context=context)
        self.probe.create_subscription(DiagnosticArray, TOPICS.diagnostics, self._on_diagnostics, qos_events())
        self.probe.create_subscription(PointStamped, TOPICS.predicted_goal, self._on_goal, qos_events())
        self.probe.create_subscription(String, TOPICS.episode_end, self._on_end, qos_events())
        self.start_client = self.probe.create_client(Trigger, TOPICS.start)
        self.reset_client = self.probe.create_client(Trigger, TOPICS.estop_reset)
        self.estop_pub = self.probe.create_publisher(Bool, TOPICS.estop, qos_latched())
        for n in (self.safety, self.feeder, self.probe):
            executors[0].add_node(n)
        self.policy = PolicyNode(CFG, networks, context=context, **policy_kw)
        executors[1].add_node(self.policy)
        self.spinners.nodes += [self.policy, self.safety, self.feeder, self.probe]
        self.spinners.spin(executors[0], "cell")
        self.spinners.spin(executors[1], "policy")
        self.spinners.loop(self._feed_once, "feeder")
        self.policy.start_loop()

    def _feed_once(self) -> None:
        with self.lock:
            q, offsets, objects, obj_offset = self.joints.copy(), dict(self.stamp_offset), list(self.objects), \
                self.object_stamp_offset
        now = time.time()  # the nodes' ROS clock (no use_sim_time)
        for k in KEYS:
            names = getattr(getattr(CFG, k[0]), k[1]).joints
            self.joint_pubs[k].publish(joint_state_msg(names, now + offsets[k], q[SLICES[k]]))
        if objects:
            self._n = getattr(self, "_n", -1) + 1
            self.object_pub.publish(point_msg(now + obj_offset, objects[self._n % len(objects)]))
        time.sleep(0.01)

    def set(self, **kw) -> None:
        with self.lock:
            for name, value in kw.items():
                setattr(self, name, value)

    def _on_diagnostics(self, msg) -> None:
        st = msg.status[0]
        if st.name == "policy":
            with self.lock:
                self.diagnostics.append({"message": st.message, **{kv.key: kv.value for kv in st.values}})

    def _on_goal(self, msg) -> None:
        with self.lock:
            self.goals.append((msg.point.x, msg.point.y, msg.point.z))

    def _on_end(self, msg) -> None:
        with self.lock:
            self.ends.append(parse_episode_end(msg))

    def count(self, topic: str, kind: str) -> int:
        """The newest count of (topic, kind) the policy reported on /diagnostics (0 if not yet)."""
        with self.lock:
            last = self.diagnostics[-1] if self.diagnostics else {}
        return int(last.get(f"implausible {kind} {topic}", 0))

    def call(self, client, what: str):
        assert client.wait_for_service(timeout_sec=5.0), f"{what} did not appear"
        future = client.call_async(Trigger.Request())
        wait_for(future.done, 5.0, f"the answer of {what}")
        return future.result()

    def release(self) -> None:
        self.estop_pub.publish(Bool(data=False))
        wait_for(lambda: self.call(self.reset_client, TOPICS.estop_reset).success, 5.0, "the reset", poll=0.1)
        wait_for(lambda: not self.policy.stop_listener.rules.stopped, 5.0, "the policy to see the release")

    def start(self):
        return self.call(self.start_client, TOPICS.start)

    def close(self) -> None:
        self.policy.stop_loop()
        self.spinners.close()


@pytest.fixture
def graph_factory(ros_context):
    graphs = []

    def make(networks, feed=None, **kw):
        graphs.append(_Graph(ros_context, networks, feed or {}, **kw))
        return graphs[-1]

    yield make
    for g in graphs:
        g.close()


def test_slices_cover_the_contract_order():
    assert [CFG.joint_names[SLICES[k]] for k in KEYS] == [getattr(getattr(CFG, s), gr).joints for s, gr in KEYS]


def test_object_positions_far_outside_the_workspace_are_never_used(graph_factory, networks):
    start = list(CFG.object.start_position)
    far = [[1e30, 1e30, 1e30], [start[0], 1e30, start[2]], [3.0, -0.5, 0.5], [0.0, -0.5, -1e30]]
    g = graph_factory(networks, feed=dict(objects=[far[0], start, far[1], start, far[2], start, far[3], start]),
                      blend_s=0.2, settle_s=0.1, stale_periods=30, cell_lost_s=1.5)
    g.release()
    wait_for(lambda: g.count(OBJ, OUTSIDE_WORKSPACE) > 0, 3.0, "a count on /diagnostics")
    first = g.count(OBJ, OUTSIDE_WORKSPACE)
    res = wait_for(lambda: (r := g.start()).success and r, 5.0, "the start")
    assert "accepted" in res.message
    end = wait_for(lambda: g.ends, 10.0, "the end of the episode")[0]
    assert end["reason"] == "done", end
    # the goal estimator saw only the plausible positions: every predicted goal is in the cell
    with g.lock:
        goals = np.array(g.goals)
    assert len(goals) >= CFG.episode_steps // 2, len(goals)
    assert np.isfinite(goals).all() and all(PL.contains(p) for p in goals), goals[np.abs(goals).max(axis=1).argmax()]
    assert np.allclose(g.policy.controller.last_object, start, atol=1e-6), g.policy.controller.last_object
    # counted, and the counts keep rising (every other message is implausible); the node runs on
    # (The policy's executor takes some 10 of the feeder's 50 implausible positions a second: with
    # keep-last-1 sensor QoS a busy subscriber gets only the newest one.)
    wait_for(lambda: g.count(OBJ, OUTSIDE_WORKSPACE) > first + 5, 3.0, "the count to rise")
    counts = g.policy.implausible_counts()
    assert set(counts) == {(OBJ, OUTSIDE_WORKSPACE)} and counts[(OBJ, OUTSIDE_WORKSPACE)] > first + 5
    with g.lock:
        last = g.diagnostics[-1]
    assert last["message"].startswith("running"), last["message"]
    assert "outside the cell's workspace" in last[f"implausible last {OBJ}"]
    assert int(last["implausible_inputs"]) == g.count(OBJ, OUTSIDE_WORKSPACE)
    assert g.start().success  # and it takes the next start


def test_a_joint_state_far_outside_the_hardware_range_is_never_used_and_counts_as_silence(graph_factory, networks):
    arm, hand = ("thrower", "arm"), ("catcher", "hand")
    bad_arm = RESET.copy()
    bad_arm[1] = PL.hardware_range("thrower", "arm")[1][1] + 10.0  # thrower joint2, 10 rad beyond its hard stop
    # (cell_lost_s 1 s: a loaded machine stalls this process's feeder for 0.3 s now and then; the
    # limit itself is tested in test_ros_policy)
    g = graph_factory(networks, feed=dict(joints=bad_arm), blend_s=0.3, settle_s=0.1, stale_periods=15, cell_lost_s=1.0)
    g.release()
    wait_for(lambda: g.count(TOPICS.joint_states[arm], OUTSIDE_JOINT_RANGE) > 5, 5.0, "a count on /diagnostics")
    res = g.start()
    # never used: the policy has no joint state of the thrower's arm at all
    assert not res.success and "no joint states yet from thrower/arm" in res.message, res.message
    assert "catcher" not in res.message and g.policy.phase.value == "idle"
    with g.lock:
        last = g.diagnostics[-1]
    assert "thrower/joint2 position 12.0944 rad" in last[f"implausible last {TOPICS.joint_states[arm]}"]

    # plausible again: the episode starts; then the catcher's hand sends only implausible states: stale
    g.set(joints=RESET.copy())
    wait_for(lambda: g.start().success, 5.0, "the start")
    wait_for(lambda: len(g.goals) >= 3, 5.0, "three policy steps")
    bad_hand = RESET.copy()
    bad_hand[22 + 6 + 3] = PL.hardware_range("catcher", "hand")[0][3] - 10.0
    g.set(joints=bad_hand)
    wait_for(lambda: g.policy.phase.value == "fault", 3.0, "the fault")
    assert "catcher/hand" in g.policy.fault and "stale" in g.policy.fault, g.policy.fault
    end = wait_for(lambda: g.ends, 2.0, "the end of the episode")[-1]
    assert end["reason"] == "fault" and "catcher/hand" in end["detail"], end
    assert g.count(TOPICS.joint_states[hand], OUTSIDE_JOINT_RANGE) > 0 or wait_for(
        lambda: g.count(TOPICS.joint_states[hand], OUTSIDE_JOINT_RANGE), 2.0, "the catcher hand's count")

    # every group implausible: the cell is lost, as if every driver were silent
    all_bad = RESET.copy()
    all_bad[[1, 6, 22 + 1, 22 + 6]] += 20.0
    g.set(joints=all_bad)
    wait_for(lambda: g.policy.cell_lost, 3.0, "the cell lost")
    assert g.policy.cell_lost.startswith("cell lost: no joint states for")
    assert not g.start().success
    counts = g.policy.implausible_counts()
    assert all(counts.get((TOPICS.joint_states[k], OUTSIDE_JOINT_RANGE), 0) > 0 for k in KEYS), counts
    g.set(joints=RESET.copy())  # and back: the node kept running
    wait_for(lambda: not g.policy.cell_lost, 2.0, "the cell back")
    wait_for(lambda: g.start().success, 5.0, "a start on plausible states")


def test_stamps_an_hour_in_the_future_or_the_past_are_never_used(graph_factory, networks):
    future, past = ("thrower", "hand"), ("catcher", "arm")
    elsewhere = [0.3, -0.6, 0.7]  # plausible, but stamped an hour ahead
    g = graph_factory(networks, feed=dict(stamp_offset={**{k: 0.0 for k in KEYS}, future: HOUR, past: -HOUR},
                                          objects=[elsewhere], object_stamp_offset=HOUR),
                      blend_s=0.2, settle_s=0.1, stale_periods=30, cell_lost_s=1.5)
    g.release()
    wait_for(lambda: g.count(TOPICS.joint_states[past], STAMP_PAST) > 5, 5.0, "the counts on /diagnostics")
    res = g.start()
    assert not res.success and "thrower/hand" in res.message and "catcher/arm" in res.message, res.message
    assert "thrower/arm" not in res.message and "catcher/hand" not in res.message, res.message
    assert g.count(TOPICS.joint_states[future], STAMP_FUTURE) > 0 and g.count(OBJ, STAMP_FUTURE) > 0
    with g.lock:
        last = g.diagnostics[-1]
    assert "in the future of this node's clock" in last[f"implausible last {TOPICS.joint_states[future]}"]
    assert "in the past of this node's clock" in last[f"implausible last {TOPICS.joint_states[past]}"]

    # joint stamps right again, the object's still an hour ahead: an episode runs on the start position
    g.set(stamp_offset={k: 0.0 for k in KEYS})
    wait_for(lambda: g.start().success, 5.0, "the start")
    end = wait_for(lambda: g.ends, 10.0, "the end of the episode")[0]
    assert end["reason"] == "done", end
    assert np.allclose(g.policy.controller.last_object, CFG.object.start_position, atol=1e-6)
    counts = g.policy.implausible_counts()
    assert set(counts) == {(TOPICS.joint_states[future], STAMP_FUTURE), (TOPICS.joint_states[past], STAMP_PAST),
                           (OBJ, STAMP_FUTURE)}, counts
    with g.lock:
        assert g.diagnostics[-1]["message"].startswith("running")
