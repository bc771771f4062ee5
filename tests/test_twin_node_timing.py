"""The twin node's hardware-like timing, over real DDS (localhost, a private domain: see conftest):
physics stepped one physics step at a time against the wall clock, a command acting from the next
physics step after its arrival, joint states at >= 100 Hz, the tracker at its camera rate with its
latency; the same under ``--speed`` (``/clock``, ``use_sim_time``).

Bounds are generous (a loaded 2-core machine): the timing itself is what
``handover graph-benchmark`` reports."""

import threading
import time

import numpy as np
import pytest

from handover.runtime.cell_config import load_cell_config

CFG = load_cell_config()
TS = CFG.twin.timestep_s
JOINT = "catcher/joint_1.0"  # a hand joint whose default pose is well inside its limits


@pytest.fixture
def cell(ros_context):
    """The ``cell`` node set (twin, four drivers, tracker) paced to real time, spinning."""
    from handover.runtime.node_graph import build_graph

    g = build_graph(CFG, ros_context, "sim", "cell")
    yield g
    g.shutdown()


class Recorder:
    """A test node: records arrivals (time.monotonic, time.time) of joint states and object positions."""

    def __init__(self, graph):
        import rclpy
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import JointState

        from handover.runtime.ros_interface import Topics, qos_command, qos_sensor, stamp_to_s

        self.topics = Topics.from_config(CFG)
        self.node = rclpy.create_node("timing_recorder", context=graph.context)
        self.lock = threading.Lock()
        self.states = {k: [] for k in self.topics.joint_states}  # (monotonic, stamp s)
        self.objects = []  # (monotonic, time.time(), stamp s)
        for key, topic in self.topics.joint_states.items():
            self.node.create_subscription(JointState, topic, lambda m, k=key: self._state(k, stamp_to_s(m.header.stamp)),
                                          qos_sensor())
        self.node.create_subscription(PointStamped, self.topics.object_position,
                                      lambda m: self._object(stamp_to_s(m.header.stamp)), qos_sensor())
        self.cmd_pub = self.node.create_publisher(JointState, self.topics.joint_commands[("catcher", "hand")],
                                                  qos_command())
        # The episode a driver follows: commands carry its token (runtime/episode_token.py)
        from std_msgs.msg import String

        from handover.runtime.ros_interface import qos_episode_start

        self.token = "timing-test/1"
        self.start_pub = self.node.create_publisher(String, self.topics.episode_start, qos_episode_start())
        self._string = String
        graph.nodes.append(self.node)  # spun with the graph's nodes (create before Graph.start)

    def arm(self, driver, timeout=10.0):
        """Announce the test's episode until ``driver`` follows it."""
        deadline = time.monotonic() + timeout
        while driver.arming.armed != self.token:
            assert time.monotonic() < deadline, f"{driver.get_name()} never armed for the test's episode"
            self.start_pub.publish(self._string(data=self.token))
            time.sleep(0.1)

    def _state(self, key, stamp):
        with self.lock:
            self.states[key].append((time.monotonic(), stamp))

    def _object(self, stamp):
        with self.lock:
            self.objects.append((time.monotonic(), time.time(), stamp))

    def clear(self):
        with self.lock:
            for v in self.states.values():
                v.clear()
            self.objects.clear()


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_command_acts_from_the_next_physics_step_not_the_next_control_period(cell):
    """Commands published at random phases of the control period: each one's target is in the
    actuator from the first physics step after its arrival, and that step's simulation time is
    within a physics step (+ one more for slack) of the arrival on the twin's wall-clock schedule
    (sim time s0 + wall time since the physics loop's start). Stepping a whole control period per
    tick would put it up to 50 ms later."""
    from sensor_msgs.msg import JointState

    node = cell.twin
    twin = node.twin
    act = twin.actuator_ids[CFG.joint_names.index(JOINT)]
    steps, arrivals = [], []  # (sim time at the step's start, ctrl of JOINT); (monotonic, sim time, ctrl after)
    physics_step, set_targets = twin._physics_step, twin.set_targets

    def logged_step():
        steps.append((twin.time, float(twin.data.ctrl[act])))
        physics_step()

    def logged_set_targets(index, targets):
        set_targets(index, targets)
        arrivals.append((time.monotonic(), twin.time, float(twin.data.ctrl[act])))

    twin._physics_step, twin.set_targets = logged_step, logged_set_targets
    sim0 = twin.time
    rec = Recorder(cell)
    cell.start()
    _wait(lambda: node._loop.stats.wakeups, 5, "the physics loop")
    wall0 = node._loop.stats.wakeups[0]  # the loop's first deadline, monotonic s: sim time sim0 runs at wall0
    names = [n for n in CFG.catcher.hand.joints]
    default = np.clip(CFG.catcher.hand.default, CFG.catcher.hand.lower, CFG.catcher.hand.upper)
    rng = np.random.default_rng(0)
    time.sleep(0.5)
    rec.arm(next(d for d in cell.drivers if (d.side, d.group) == ("catcher", "hand")))
    for i in range(12):
        time.sleep(rng.uniform(0.02, 0.08))  # a random phase of the control period
        q = default.copy()
        q[names.index(JOINT)] += 0.04 if i % 2 else -0.04
        msg = JointState(name=names, position=[float(v) for v in q])
        msg.header.frame_id = rec.token
        rec.cmd_pub.publish(msg)
    time.sleep(0.3)
    cell.twin.stop()
    arrived = [a for a in arrivals if a[1] > sim0]
    assert len(arrived) >= 10, f"only {len(arrived)} of 12 commands reached the twin"
    late = []
    for wall, sim_at_arrival, target in arrived:
        applied = [t for t, c in steps if t >= sim_at_arrival - 1e-9]
        assert applied, "no physics step after a command's arrival"
        first = next((t, c) for t, c in steps if t >= sim_at_arrival - 1e-9)
        assert first[1] == target, "the first physics step after the arrival did not use the new target"
        schedule = sim0 + (wall - wall0)  # where the simulation should be at that wall time
        late.append(first[0] - schedule)
    late = np.array(late)
    assert late.max() <= 2 * TS + 1e-6, f"commands acted up to {late.max() * 1e3:.1f} ms (sim) after their arrival"
    # physics steps are one timestep apart in simulation time (never whole control periods at once)
    t = np.array([s[0] for s in steps if s[0] > sim0])
    np.testing.assert_allclose(np.diff(t), TS, atol=1e-9)


def test_joint_states_at_100_hz_and_the_tracker_at_its_rate_with_its_latency(cell):
    assert CFG.joint_state_rate_hz >= 100.0
    rec = Recorder(cell)
    cell.start()
    _wait(lambda: all(len(v) > 5 for v in rec.states.values()) and len(rec.objects) > 5, 10, "joint states and frames")
    rec.clear()
    window = 2.0
    time.sleep(window)
    with rec.lock:
        states = {k: list(v) for k, v in rec.states.items()}
        objects = list(rec.objects)
    for key, msgs in states.items():
        arrivals = np.array([m[0] for m in msgs])
        assert len(msgs) >= 0.7 * CFG.joint_state_rate_hz * window, f"{key}: {len(msgs)} joint states in {window} s"
        assert np.median(np.diff(arrivals)) <= 1.25 / CFG.joint_state_rate_hz, key
    tr = CFG.twin.tracker
    assert len(objects) >= 0.7 * tr.rate_hz * window, f"{len(objects)} object positions in {window} s"
    stamps = np.array([o[2] for o in objects])
    # one frame every 1/rate s of capture time (to a physics step), each published once
    assert np.all(np.diff(stamps) > 0)
    assert np.median(np.diff(stamps)) == pytest.approx(1.0 / tr.rate_hz, abs=TS)
    # arrival - capture: the camera's latency, plus at most one physics step, plus delivery
    age = np.array([o[1] for o in objects]) - stamps
    assert tr.latency_s - 0.002 <= np.median(age) <= tr.latency_s + TS + 0.015, f"median age {np.median(age):.4f} s"


def test_under_sim_time_joint_states_keep_100_hz_of_simulation_time(ros_context):
    from handover.runtime.node_graph import build_graph

    g = build_graph(CFG, ros_context, "sim", "cell", real_time=False, speed=2.0)
    try:
        rec = Recorder(g)
        g.start()
        _wait(lambda: all(len(v) > 5 for v in rec.states.values()), 10, "joint states under /clock")
        rec.clear()
        w0, s0 = time.monotonic(), g.twin.sim_time
        time.sleep(2.0)
        w1, s1 = time.monotonic(), g.twin.sim_time
        assert g.twin.clock_published >= g.twin.steps - 1  # /clock every physics step by default
        with rec.lock:
            states = {k: [m[1] for m in v] for k, v in rec.states.items()}
        assert s1 - s0 > 0.5 * (w1 - w0), "the twin did not run at (about) 2x real time"
        for key, stamps in states.items():
            # sim-time timers fire on /clock updates (one per physics step): 100 Hz in simulation
            # time, each state one or two physics steps after the last; a loaded executor that
            # takes a /clock update late skips a period (hence the generous count)
            span = stamps[-1] - stamps[0]
            assert span > 0 and (len(stamps) - 1) / span >= 0.5 * CFG.joint_state_rate_hz, \
                f"{key}: {len(stamps)} joint states over {span:.3f} s of simulation time"
            assert np.median(np.diff(stamps)) <= 1.0 / CFG.joint_state_rate_hz + TS + 1e-6, key
    finally:
        g.shutdown()


def test_twin_node_checks_clock_every(ros_context):
    pytest.importorskip("rclpy")
    from handover.sim_twin.twin_node import TwinNode

    with pytest.raises(ValueError, match="clock_every"):
        TwinNode(CFG, context=ros_context, real_time=False, speed=2.0, clock_every=0)


def test_config_rejects_a_joint_state_rate_below_the_control_rate():
    import yaml

    from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, ConfigError, cell_config_from_dict

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["models"]["bundle"] = None
    raw["joint_state_rate_hz"] = 10.0
    with pytest.raises(ConfigError, match="joint_state_rate_hz.*control rate"):
        cell_config_from_dict(raw, DEFAULT_CONFIG_PATH)
