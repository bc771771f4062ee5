"""The policy node and the twin node over real DDS (localhost, a private domain: see conftest).

The cell: the twin node (physics in real time, or on ``/clock``), the four joint-group drivers and
the object tracker serving the twin's devices, the safety node (it starts latched: the probe
releases it like the operator), the policy node with the shipped reference bundle, and a probe node
that plays the operator and records what goes over the wire.

Also the policy's fail-safe behaviour: a bundle whose actor outputs NaN (a real ONNX model) aborts
the episode without a NaN command; a cell that stops publishing joint states is "lost" within 0.5 s.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, String, UInt32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from handover.drivers.joint_group_node import JointGroupNode  # noqa: E402
from handover.drivers.object_tracker_node import ObjectTrackerNode  # noqa: E402
from handover.runtime.cell_config import load_cell_config  # noqa: E402
from handover.runtime.contract import ContractSpec  # noqa: E402
from handover.runtime.policy_networks import PolicyNetworks  # noqa: E402
from handover.runtime.policy_node import PolicyNode  # noqa: E402
from handover.runtime.ros_interface import (  # noqa: E402
    GROUPS,
    SIDES,
    Topics,
    parse_episode_end,
    qos_events,
    qos_latched,
    stamp_to_s,
)
from handover.runtime.safety_node import SafetyNode  # noqa: E402
from handover.sim_twin.twin_node import TwinNode  # noqa: E402
from support import Spinners, wait_for  # noqa: E402

CFG = load_cell_config()
PERIOD = CFG.control_period_s
KEYS = tuple((s, g) for s in SIDES for g in GROUPS)
SPEC = ContractSpec.from_config(CFG)
RESET_TARGETS = np.clip(SPEC.default, SPEC.lower, SPEC.upper).astype(float)
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)  # the probe must not lose a message


class _Probe:
    """The test's node: the operator's services and the estop, and a record of every message it
    listens to (``time.perf_counter()`` at receipt). It does not listen to the joint states (four
    more subscriptions at the control rate cost CPU the cell needs); the twin says where the joints are."""

    def __init__(self, context):
        self.node = Node("test_probe", context=context)
        self.topics = t = Topics.from_config(CFG)
        self.lock = threading.Lock()
        self.commands = {k: [] for k in KEYS}  # (t, (stamp s, positions, DDS receive time: time.time_ns()))
        self.goals, self.done, self.outcomes, self.diagnostics, self.ends = [], [], [], [], []
        n = self.node
        for k in KEYS:
            n.create_subscription(JointState, t.joint_commands[k], self._rec_command(self.commands[k]), DEEP)
        n.create_subscription(PointStamped, t.predicted_goal,
                              self._rec(self.goals, lambda m: (stamp_to_s(m.header.stamp), (m.point.x, m.point.y, m.point.z))),
                              DEEP)
        n.create_subscription(UInt32, t.episode_done, self._rec(self.done, lambda m: m.data), qos_events())
        n.create_subscription(String, t.twin_outcome, self._rec(self.outcomes, lambda m: json.loads(m.data)), qos_events())
        n.create_subscription(String, t.episode_end, self._rec(self.ends, parse_episode_end), qos_events())
        n.create_subscription(DiagnosticArray, t.diagnostics,
                              self._rec(self.diagnostics, lambda m: (m.status[0].name, m.status[0].message)), qos_events())
        self.start_client = n.create_client(Trigger, t.start)
        self.reset_client = n.create_client(Trigger, t.estop_reset)
        self.estop_pub = n.create_publisher(Bool, t.estop, qos_latched())

    def _rec_command(self, into: list):
        def callback(msg, info):
            t = time.perf_counter()
            with self.lock:
                into.append((t, (stamp_to_s(msg.header.stamp), np.array(msg.position), info["received_timestamp"])))
        return callback

    def _rec(self, into: list, convert):
        def callback(msg):
            t = time.perf_counter()
            with self.lock:
                into.append((t, convert(msg)))
        return callback

    def start(self):
        assert self.start_client.wait_for_service(timeout_sec=5.0), "the policy node's start service did not appear"
        future = self.start_client.call_async(Trigger.Request())
        wait_for(future.done, 5.0, "the answer of /handover/start")
        return future.result()

    def reset(self):
        assert self.reset_client.wait_for_service(timeout_sec=5.0), "the safety node's reset service did not appear"
        future = self.reset_client.call_async(Trigger.Request())
        wait_for(future.done, 5.0, "the answer of /handover/estop/reset")
        return future.result()

    def release(self, policy, timeout: float = 5.0) -> None:
        """The operator's release of the latch: estop false, then the reset until accepted; waits
        until the policy saw it."""
        self.estop_pub.publish(Bool(data=False))
        wait_for(lambda: self.reset().success, timeout, "the reset to be accepted", poll=0.1)
        wait_for(lambda: not policy.stop_listener.rules.stopped, timeout, "the policy to see the release")

    def start_until_accepted(self, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            res = self.start()
            if res.success or time.monotonic() > deadline:
                return res
            time.sleep(0.05)

    def commands44(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ticks whose four commands all arrived (joined by stamp), in order: receive time of the
        last of the four (perf_counter s), stamp (node clock s), the 44 targets (rad)."""
        with self.lock:
            by_stamp = [{stamp: (t, q) for t, (stamp, q, _) in self.commands[k]} for k in KEYS]
        stamps = sorted(set.intersection(*(set(d) for d in by_stamp)))
        times = np.array([max(d[st][0] for d in by_stamp) for st in stamps])
        q = np.array([np.concatenate([d[st][1] for d in by_stamp]) for st in stamps]).reshape(len(stamps), 44)
        return times, np.array(stamps), q

    def diag_of(self, name: str) -> list[str]:
        with self.lock:
            return [msg for (_, (n, msg)) in self.diagnostics if n == name]


class _Cell:
    """The test's graph in this process: one single-threaded executor for the twin, the drivers,
    the tracker and the probe, and a multi-threaded one for the policy node, each spinning in its
    own thread. :meth:`close` takes everything down.

    Why so: rclpy executors are Python loops that rebuild their wait set on every wake-up and all
    threads share the GIL. Measured here (two cores shared with other test runs): one
    multi-threaded executor for everything delayed joint states by up to 0.2 s; one executor per
    node costs more GIL hand-overs. The policy node needs its own multi-threaded executor so that
    joint states keep coming while a service response waits for DDS matching (rmw_fastrtps blocks
    up to 100 ms on a first response). The fixture also lowers the GIL switch interval to 1 ms
    (default 5 ms), which halved the delays of the paced threads."""

    def __init__(self, context, real_time: bool = True, speed: float = 1.0):
        self.context = context
        self.params = [] if real_time else [Parameter("use_sim_time", Parameter.Type.BOOL, True)]
        self.policy = None
        self.spinners = Spinners()
        self.shared = self.spinners.spin(SingleThreadedExecutor(context=context), "cell")
        self.twin = self.add(TwinNode(CFG, context=context, real_time=real_time, speed=speed, seed=1))
        self.safety = self.add(SafetyNode(CFG, context=context))  # steady clock only: no /clock subscription
        self.probe = _Probe(context)
        self.add(self.probe.node)

    def add(self, node, executor=None):
        (executor or self.shared).add_node(node)
        self.spinners.nodes.append(node)
        return node

    def add_drivers(self, groups=KEYS) -> dict:
        """The drivers of ``groups`` and the object tracker, serving the twin's devices; returns the
        drivers by group."""
        drivers = {key: self.add(JointGroupNode(self.twin.devices.joint_groups[key], CFG, *key, context=self.context,
                                                parameter_overrides=self.params)) for key in groups}
        self.add(ObjectTrackerNode(self.twin.devices.tracker, CFG, context=self.context, parameter_overrides=self.params,
                                   device_clock=lambda: self.twin.sim_time))
        return drivers

    def silence(self, node) -> None:
        """Stop spinning ``node`` (a driver that hangs: its timers stop, nothing is published)."""
        self.shared.remove_node(node)

    def revive(self, node) -> None:
        """Spin a silenced node again."""
        self.shared.add_node(node)

    def add_policy(self, networks, release: bool = True, **kw):
        """The policy node; ``release``: then release the safety node's initial latch, as the operator does."""
        executor = self.spinners.spin(MultiThreadedExecutor(num_threads=2, context=self.context), "policy")
        self.policy = self.add(PolicyNode(CFG, networks, context=self.context, parameter_overrides=self.params, **kw),
                               executor)
        self.policy.start_loop()
        if release:
            self.probe.release(self.policy)
        return self.policy

    def close(self):
        if self.policy is not None:
            self.policy.stop_loop()
        self.twin.stop()
        self.spinners.close()


@pytest.fixture
def cell_factory(ros_context, fast_gil_switch):
    cells = []

    def make(**kw):
        cells.append(_Cell(ros_context, **kw))
        return cells[-1]

    yield make
    for c in cells:
        c.close()


def twin_at_rest(twin_node, interval_s: float, tol_rad: float) -> bool:
    """No joint of the twin moved more than ``tol_rad`` over ``interval_s`` (s, wall clock)."""
    with twin_node.lock:
        before = twin_node.twin.joint_positions()
    time.sleep(interval_s)
    with twin_node.lock:
        after = twin_node.twin.joint_positions()
    return bool(np.abs(after - before).max() < tol_rad)


def percentiles_ms(values) -> str:
    v = np.asarray(values, dtype=float) * 1e3
    return f"p50 {np.percentile(v, 50):.2f} ms, p99 {np.percentile(v, 99):.2f} ms (n={v.size})" if v.size else "no samples"


# ------------------------------------------------------------------------------------------------


# Relaxed staleness for the tests that need a whole episode: this machine's two cores are shared
# with other test runs, and the Python executors then delay single driver threads by 0.1 s and more.
# The staleness rule itself is tested below with a silenced driver (at 15 periods, so that a slow
# but live driver is not the one named).
RELAXED_STALE = 30
RELAXED_LOST_S = 1.5  # s: these tests are not about a lost cell; a loaded 2-core machine stalls a feeder 0.3 s


def test_start_is_refused_until_every_group_has_reported(cell_factory, networks):
    cell = cell_factory()
    cell.add_policy(networks)
    res = cell.probe.start()
    assert not res.success
    assert all(f"{s}/{g}" in res.message for s, g in KEYS), res.message

    cell.add_drivers(groups=KEYS[:3])  # catcher/hand stays silent
    res = wait_for(lambda: (r := cell.probe.start()) and "/arm" not in r.message and "thrower" not in r.message and r,
                   5.0, "a refusal that names only the missing group")
    assert not res.success
    assert "catcher/hand" in res.message and "/handover/catcher/hand/joint_states" in res.message, res.message
    assert cell.policy.phase.value == "idle"
    assert all(len(v) == 0 for v in cell.probe.commands.values())  # nothing commanded before a start


def test_an_episode_over_ros_blends_without_a_jump_and_is_judged(cell_factory, networks):
    cell = cell_factory()
    twin = cell.twin
    cell.add_drivers()
    # Move the catcher away from the reset pose first (as if after an earlier episode), so the blend has work.
    offset = np.zeros(22)
    offset[[1, 4]] = [0.3, -0.3]  # catcher arm joints 2 and 5, rad
    offset[[7, 11]] = [-0.4, -0.4]  # two catcher finger joints, rad
    with twin.lock:
        twin.twin.set_targets(np.arange(22, 44), RESET_TARGETS[22:] + offset)
    twin.start()
    blend_s = 0.5
    policy = cell.add_policy(networks, blend_s=blend_s, stale_periods=RELAXED_STALE, cell_lost_s=RELAXED_LOST_S)
    # The catcher settles at its new pose (with the URDF's light arm damping it swings for ~2 s, and
    # the object creeps in the thrower's hand a while longer): at rest when no joint moved more than
    # 2e-4 rad in 0.1 s, so the joints move well under the 1e-3 rad checked below while the start is
    # on its way.
    wait_for(lambda: twin_at_rest(twin, 0.1, 2e-4), 15.0, "the joints at rest", poll=0.0)

    with twin.lock:
        measured = twin.twin.joint_positions()
    res = cell.probe.start_until_accepted()
    assert res.success, res.message
    done = wait_for(lambda: cell.probe.done, 10.0, "episode_done")
    assert done[0][1] == 1, policy.fault
    outcome = wait_for(lambda: cell.probe.outcomes, 5.0, "the twin's outcome")[0][1]
    time.sleep(5 * PERIOD)

    times, stamps, cmds = cell.probe.commands44()
    # No jump: the first command is where the joints were, then small steps to the reset pose.
    assert np.abs(cmds[0] - measured).max() < 1e-3, np.abs(cmds[0] - measured).max()
    at_reset = np.flatnonzero(np.abs(cmds - RESET_TARGETS).max(axis=1) < 1e-6)
    assert at_reset.size, "the blend never reached the reset pose"
    blend, blend_t = cmds[: at_reset[0] + 1], stamps[: at_reset[0] + 1]
    assert blend_t[-1] - blend_t[0] >= blend_s - PERIOD - 1e-6
    # speed between consecutive commands (a tick skipped under load: two periods of progress)
    speed = np.abs(np.diff(blend, axis=0)).max(axis=1) / np.diff(blend_t)
    peak = 1.875 * np.abs(RESET_TARGETS - measured).max() / blend_s  # the min-jerk profile's peak speed, rad/s
    assert speed.max() <= 1.05 * peak, (speed.max(), peak)
    # The episode: a predicted goal per step; after it the last targets keep coming (holding).
    # The predicted goal's writer keeps only the newest message (keep last 1): a probe that the
    # executor serves late loses some, so count a clear majority, never more than the steps.
    assert 0.6 * CFG.episode_steps <= len(cell.probe.goals) <= CFG.episode_steps
    last_step = max(stamp for _, (stamp, _) in cell.probe.goals)
    wait_for(lambda: (cell.probe.commands44()[1] > last_step).sum() >= 3, 2.0, "three holding commands")
    _, stamps, cmds = cell.probe.commands44()
    holding = cmds[stamps > last_step]
    assert np.abs(holding - cmds[stamps == last_step]).max() == 0.0
    assert policy.phase.value == "idle"
    assert outcome["episode"] == 1 and isinstance(outcome["success"], bool) and len(outcome["object_position"]) == 3
    assert twin.outcomes == [outcome]

    timing = policy.timing()
    assert timing["state_to_command_s"].size == CFG.episode_steps
    assert any(m.startswith("running") for m in cell.probe.diag_of("policy"))
    assert any(m.startswith("running") for m in cell.probe.diag_of("twin"))
    print(f"\nepisode over ROS: success={outcome['success']} ({outcome['reason']}), object at "
          f"{np.round(outcome['object_position'], 3).tolist()}; loop jitter {percentiles_ms(timing['jitter_s'])}, "
          f"overruns {timing['overruns']}; joint state -> command {percentiles_ms(timing['state_to_command_s'])}; "
          f"policy step {percentiles_ms(timing['compute_s'])}; twin overruns {twin._loop.stats.overruns}")


def test_an_estop_mid_episode_silences_the_commands_within_one_period(cell_factory, networks):
    cell = cell_factory()
    cell.add_drivers()
    cell.twin.start()
    policy = cell.add_policy(networks, blend_s=0.2, settle_s=0.1, stale_periods=RELAXED_STALE, cell_lost_s=RELAXED_LOST_S)
    assert cell.probe.start_until_accepted().success
    wait_for(lambda: len(cell.probe.goals) >= 10, 5.0, "ten policy steps")

    t_stop = time.time_ns()  # the DDS receive times below are on this clock
    cell.probe.estop_pub.publish(Bool(data=True))
    time.sleep(0.5)
    times, _, _ = cell.probe.commands44()
    with cell.probe.lock:  # received by DDS (not when the test's executor got round to it)
        last = max(v[-1][1][2] for v in cell.probe.commands.values())
    assert last <= t_stop + 1e9 * PERIOD, f"a joint command arrived {1e-6 * (last - t_stop):.1f} ms after the stop"
    assert len(cell.probe.goals) < CFG.episode_steps and not cell.probe.done
    assert policy.phase.value == "estopped"
    res = cell.probe.start()
    assert not res.success and "latched" in res.message, res.message
    wait_for(lambda: any(m.startswith("estopped") for m in cell.probe.diag_of("policy")), 2.0, "estopped diagnostics")

    ends = wait_for(lambda: cell.probe.ends, 2.0, "the end of the episode")
    assert ends[0][1]["reason"] == "stopped" and ends[0][1]["episode"] == 1, ends

    # A false on the latch topic from anyone but the safety node releases nothing.
    n_before = len(times)
    # (a node of its own, never spun: destroying it later cannot pull anything from under an executor)
    rogue = Node("rogue", context=cell.context)
    rogue_pub = rogue.create_publisher(Bool, cell.probe.topics.safety_latched, qos_latched())
    cell.probe.estop_pub.publish(Bool(data=False))
    wait_for(lambda: rogue_pub.get_subscription_count() >= 3, 5.0, "the latch subscribers (policy, drivers)")
    rogue_pub.publish(Bool(data=False))
    wait_for(lambda: policy.stop_listener.rules.releases_refused >= 1, 2.0, "the rogue release to be refused")
    assert policy.phase.value == "estopped" and not cell.probe.start().success
    # Released by the safety node's reset (the rogue gone first: while it is on the topic every
    # release is refused): idle, and silent until the next start.
    rogue.destroy_node()
    wait_for(lambda: not any(i.node_name == "rogue" for i in policy.get_publishers_info_by_topic(policy.topics.safety_latched)),
             5.0, "the rogue gone from the graph")
    assert cell.probe.reset().success
    wait_for(lambda: policy.phase.value == "idle", 2.0, "idle after the release")
    time.sleep(0.2)
    assert cell.probe.commands44()[0].size == n_before
    assert cell.probe.start().success


def test_a_silent_driver_aborts_the_episode_and_is_named(cell_factory, networks):
    cell = cell_factory()
    drivers = cell.add_drivers()
    cell.twin.start()
    policy = cell.add_policy(networks, blend_s=0.3, settle_s=0.1, stale_periods=15)
    assert cell.probe.start_until_accepted().success
    wait_for(lambda: len(cell.probe.goals) >= 3, 5.0, "three policy steps")
    cell.silence(drivers[("catcher", "hand")])
    wait_for(lambda: policy.phase.value == "fault", 2.0, "the fault")
    assert "catcher/hand" in policy.fault and "stale" in policy.fault, policy.fault
    wait_for(lambda: any(m.startswith("fault") and "catcher/hand" in m for m in cell.probe.diag_of("policy")), 2.0,
             "fault diagnostics naming the group")
    time.sleep(0.2)  # commands published before the abort may still be on their way
    n = cell.probe.commands44()[0].size
    time.sleep(0.2)
    assert cell.probe.commands44()[0].size == n and not cell.probe.done  # aborted: nothing more is commanded
    res = cell.probe.start()
    assert not res.success and "catcher/hand" in res.message, res.message


def test_a_twin_on_sim_time_drives_every_clock_through_clock(cell_factory, networks):
    # Not paced by the wall clock: the twin publishes /clock and every node runs on sim time. (At
    # speed 1: each node of the graph takes every /clock message, which at 2x real time saturates
    # one Python executor on this shared machine.)
    cell = cell_factory(real_time=False, speed=1.0)
    cell.add_drivers()
    cell.twin.start()
    policy = cell.add_policy(networks, blend_s=0.3, settle_s=0.5, stale_periods=RELAXED_STALE, cell_lost_s=RELAXED_LOST_S)
    assert cell.probe.start_until_accepted().success
    outcome = wait_for(lambda: cell.probe.outcomes, 10.0, "the twin's outcome")[0][1]
    # The loop ran on sim time: its wake-ups follow the twin's clock, one /clock step apart (not
    # zero and two: the deadlines are float sums, the clock whole nanoseconds).
    wake = policy.timing()["wakeups_s"]
    assert wake[0] < 1.0 and abs(wake[-1] - cell.twin.sim_time) < 0.2
    on_time = np.abs(np.diff(wake) - PERIOD) < 1e-6
    assert on_time.mean() > 0.6, f"only {on_time.mean():.0%} of the loop's intervals are one period of sim time"
    _, stamps, _ = cell.probe.commands44()
    assert stamps.max() < cell.twin.sim_time + PERIOD  # commands are stamped in sim time
    print(f"\nsim time: outcome {outcome}")


# -- the policy fails safe (issue 11, point 6) ---------------------------------------------------


@pytest.fixture(scope="module")
def nan_networks(tmp_path_factory):
    """The reference bundle with its thrower actor replaced by a real ONNX model of the same
    interface (obs (batch, 450) -> action (batch, 22), same opset) whose output is NaN: a broken
    export or a diverged training run, as the policy would load it."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path_factory.mktemp("nan_bundle") / "bundle"
    shutil.copytree(CFG.models.bundle, folder)
    original = onnx.load(str(folder / "thrower_actor.onnx"))
    weights = helper.make_tensor("w", TensorProto.FLOAT, [450, 22], np.zeros(450 * 22, dtype=np.float32))
    bias = helper.make_tensor("b", TensorProto.FLOAT, [22], np.full(22, np.nan, dtype=np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["action"])],
        "nan_actor",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 450])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 22])],
        initializer=[weights, bias])
    model = helper.make_model(graph, opset_imports=list(original.opset_import))
    model.ir_version = original.ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "thrower_actor.onnx"))
    return PolicyNetworks.load(folder, warmup=2)


def test_a_nan_emitting_actor_aborts_the_episode_and_never_publishes_nan(cell_factory, nan_networks):
    cell = cell_factory()
    cell.add_drivers()
    cell.twin.start()
    policy = cell.add_policy(nan_networks, blend_s=0.3, settle_s=0.1, stale_periods=RELAXED_STALE, cell_lost_s=RELAXED_LOST_S)
    assert cell.probe.start_until_accepted().success
    wait_for(lambda: policy.phase.value == "fault", 6.0, "the fault")
    assert "not finite" in policy.fault, policy.fault
    end = wait_for(lambda: cell.probe.ends, 2.0, "the end of the episode")[0][1]
    assert end["reason"] == "fault" and "not finite" in end["detail"] and end["episode"] == 1, end
    wait_for(lambda: any(m.startswith("fault") and "not finite" in m for m in cell.probe.diag_of("policy")), 2.0,
             "fault diagnostics with the reason")
    time.sleep(0.3)
    _, _, cmds = cell.probe.commands44()
    n = cmds.shape[0]
    assert n > 0 and np.isfinite(cmds).all(), "a non-finite command left the policy node"
    with cell.probe.lock:
        assert all(np.isfinite(q).all() for k in KEYS for _, (_, q, _) in cell.probe.commands[k])
    time.sleep(0.3)
    assert cell.probe.commands44()[0].size == n and not cell.probe.done, "commands after the abort"
    assert not cell.probe.goals, "no policy step completed, no predicted goal"
    assert all(d.commands_rejected == 0 for d in cell.spinners.nodes if isinstance(d, JointGroupNode)), \
        "the drivers had to refuse a command"


def test_a_lost_cell_stops_the_commands_within_half_a_second_and_comes_back_idle(cell_factory, networks):
    cell = cell_factory()
    drivers = cell.add_drivers()
    cell.twin.start()
    policy = cell.add_policy(networks, blend_s=0.3, settle_s=0.1, stale_periods=RELAXED_STALE)
    assert cell.probe.start_until_accepted().success
    wait_for(lambda: cell.probe.done, 10.0, "the end of the first episode")
    time.sleep(0.2)  # idle: the last targets again and again (the catcher holds the object)
    n = cell.probe.commands44()[0].size
    wait_for(lambda: cell.probe.commands44()[0].size >= n + 3, 2.0, "the idle hold")

    def lose_cell():
        for d in drivers.values():
            cell.silence(d)
        wait_for(lambda: policy.cell_lost, 2.0, "the cell lost")
        time.sleep(0.5)
        gap = policy.last_command_perf - policy.last_state_perf
        # the bound of the issue; CELL_LOST_S is 0.3 s + at most one tick
        assert gap < 0.5, f"the policy commanded {gap:.3f} s after the last joint state"
        assert policy.cell_lost.startswith("cell lost: no joint states for")
        wait_for(lambda: any(m.startswith("fault: cell lost") for m in cell.probe.diag_of("policy")), 2.0,
                 "cell lost in the diagnostics")
        res = cell.probe.start()
        assert not res.success and "cell lost" in res.message, res.message

    lose_cell()  # in IDLE, holding
    count = cell.probe.commands44()[0].size
    for d in drivers.values():
        cell.revive(d)
    wait_for(lambda: not policy.cell_lost, 2.0, "the cell back")
    assert policy.phase.value == "idle"
    wait_for(lambda: cell.probe.diag_of("policy")[-1].startswith("running"), 2.0, "running again")
    time.sleep(0.3)
    assert cell.probe.commands44()[0].size == count, "the hold came back without a start"
    assert len(cell.probe.ends) == 1, "the first episode ended once (done)"

    # mid-episode: the episode ends with "cell lost"
    assert cell.probe.start_until_accepted().success
    wait_for(lambda: len(cell.probe.goals) >= 3, 5.0, "three policy steps")
    lose_cell()
    end = wait_for(lambda: len(cell.probe.ends) >= 2 and cell.probe.ends, 2.0, "the end of episode 2")[1][1]
    assert end["reason"] == "cell lost" and end["episode"] == 2, end
