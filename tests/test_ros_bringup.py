"""The whole sim graph over real DDS (private domain, localhost): an external test node starts an
episode, watches the commands, stops the cell mid-throw and checks that nothing moves after it.
The launch file and ``ros2 launch``: tests/test_ros_launch.py."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from handover.runtime.cell_config import load_cell_config

REPO = Path(__file__).resolve().parent.parent
CFG = load_cell_config()
PERIOD = CFG.control_period_s


@pytest.fixture
def graph(ros_context):
    from handover.runtime.node_graph import build_graph

    g = build_graph(CFG, ros_context, "sim", "all")
    g.start()
    yield g
    g.shutdown()


@pytest.mark.parametrize("t", [0.0, 0.5, 60 * (1 / 60), 0.999999999999997, 12.3456789012])
def test_stamps_round_to_whole_nanoseconds(t):
    pytest.importorskip("builtin_interfaces", reason="ROS 2 messages are not installed")
    from handover.runtime.ros_interface import s_to_stamp, stamp_to_s

    stamp = s_to_stamp(t)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_s(stamp) == pytest.approx(t, abs=1e-9)


class Watcher:
    """The external test node: records every joint command and predicted goal with its arrival time."""

    def __init__(self, graph):
        import rclpy
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger

        from handover.runtime.ros_interface import Topics, qos_command, qos_latched

        self.topics = Topics.from_config(CFG)
        self.node = rclpy.create_node("e2e_watcher", context=graph.context)
        self.lock = threading.Lock()
        self.commands: list[tuple[float, str]] = []
        self.goals: list[float] = []
        for key, topic in self.topics.joint_commands.items():
            self.node.create_subscription(JointState, topic, lambda m, t=topic: self._cmd(t), qos_command())
        self.node.create_subscription(PointStamped, self.topics.predicted_goal, lambda m: self._goal(), qos_command())
        self.estop_pub = self.node.create_publisher(Bool, self.topics.estop, qos_latched())
        self.start = self.node.create_client(Trigger, self.topics.start)
        self.reset = self.node.create_client(Trigger, self.topics.estop_reset)
        graph.executor.add_node(self.node)
        graph.nodes.append(self.node)

    def _cmd(self, topic):
        with self.lock:
            self.commands.append((time.perf_counter(), topic))

    def _goal(self):
        with self.lock:
            self.goals.append(time.perf_counter())

    def call(self, client, timeout=5.0):
        from std_srvs.srv import Trigger

        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return future.result()


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_stop_mid_throw_over_dds(graph):
    from std_msgs.msg import Bool

    w = Watcher(graph)
    # the safety node starts latched: release it first, as the operator does (estop false, then reset)
    w.estop_pub.publish(Bool(data=False))
    deadline = time.monotonic() + 10
    while not (res := w.call(w.reset)).success:
        assert time.monotonic() < deadline, res.message
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while not (res := w.call(w.start)).success:  # the graph needs a moment to discover itself
        assert time.monotonic() < deadline, res.message
        time.sleep(0.1)
    _wait(lambda: len(w.goals) >= 8, 10, "8 policy steps of the episode")  # mid-throw
    t_stop = time.perf_counter()
    w.estop_pub.publish(Bool(data=True))
    time.sleep(1.0)
    # The target is one control period (handover bringup --measure-stop reports it: p99 17.7 ms in the
    # one-process graph here). On this 2-core VM the Python executor sometimes delivers the stop a
    # tick late, so the test bounds it at three periods; anything later is a broken stop.
    bound = 3 * PERIOD
    with w.lock:
        late = [t - t_stop for t, _ in w.commands if t > t_stop + bound]
    assert not late, f"{len(late)} commands arrived more than {bound*1e3:.0f} ms after the stop (first at +{late[0]*1e3:.1f} ms)"
    assert len(w.goals) < CFG.episode_steps  # the episode was cut short
    # The drivers hold: from the stop on, the twin's PD targets do not change at all.
    twin = graph.twin
    with twin.lock:
        held = twin.twin.data.ctrl[twin.twin.actuator_ids].copy()
    time.sleep(0.5)
    with twin.lock:
        np.testing.assert_array_equal(twin.twin.data.ctrl[twin.twin.actuator_ids], held)
    # ...and the motion dies out around the held targets. The twin's arms have the original's light
    # drive damping (1 N m s/rad, damping ratio ~0.05) and ring for a few seconds after a stop in
    # mid-swing (catcher arm still 0.55 rad/s 1 s after the stop, measured), so rest is awaited.
    def speeds():
        with twin.lock:
            return [np.abs(dev.read(twin.twin.time).velocity).max() for dev in twin.devices.joint_groups.values()]
    _wait(lambda: max(speeds()) < 0.1, 6.0, "the joints to come to rest around the held targets")
    # latched: a start is refused; a reset while the estop is true is refused with the reason
    assert not w.call(w.start).success
    res = w.call(w.reset)
    assert not res.success and "still true" in res.message
    w.estop_pub.publish(Bool(data=False))
    time.sleep(0.1)
    assert w.call(w.reset).success
    deadline = time.monotonic() + 5
    while not (res := w.call(w.start)).success:
        assert time.monotonic() < deadline, res.message
        time.sleep(0.05)


def test_bringup_command_runs_episodes_and_prints_results():
    out = subprocess.run([sys.executable, "-m", "handover", "bringup", "--backend", "sim", "--episodes", "2"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert sum(line.startswith("episode ") for line in lines) == 2
    assert any(line.startswith("summary: ") for line in lines)
    assert any("command loop period jitter" in line for line in lines)
