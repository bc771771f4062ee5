"""The command gate (runtime/command_gate.py): one test per rule with numbers worked out by hand,
its invariants on random commands, a mirror behind the cell's gate, and the driver node over DDS.

Hand-worked numbers use a two-joint group ``a``, ``b``: limits [-1, 1] rad, 3.0 rad/s, control
period 0.05 s, so max_step = 3.0 x 0.05 = 0.15 rad per command and, with 3 stale periods,
stale_s = 3 x 0.05 = 0.15 s. Units: rad, rad/s, s.
"""

from __future__ import annotations

import dataclasses
import functools
import threading

import numpy as np
import pytest
import support
from support import Spinners

from handover.runtime.cell_config import GateConfig, JointGroupConfig, load_cell_config
from handover.runtime.command_gate import (
    GateLimits,
    GateMode,
    GateState,
    gate_command,
    gate_poll,
    hold_state,
    staleness,
)

CFG = load_cell_config()
AB = GateLimits.from_limits(("a", "b"), (-1.0, -1.0), (1.0, 1.0), (3.0, 3.0), control_period_s=0.05, stale_periods=3.0)
EPS = 1e-12  # rad: float rounding of 3.0 x 0.05 and the sums below


def following(reference, since: float) -> GateState:
    """A gate that last let ``reference`` through at ``since``."""
    return GateState(GateMode.FOLLOWING, np.array(reference, dtype=float), since)


# -- limits ---------------------------------------------------------------------------------------


def test_limits_from_config():
    group = JointGroupConfig(joints=("a", "b"), lower=(-1.0, -1.0), upper=(1.0, 1.0), velocity_limit=(3.0, 3.0),
                             default=(0.0, 0.0))
    limits = GateLimits.from_config(group, GateConfig(stale_periods=3.0), control_period_s=0.05)
    assert limits.names == ("a", "b") and limits.lower == (-1.0, -1.0) and limits.upper == (1.0, 1.0)
    assert limits.max_step == pytest.approx((0.15, 0.15), abs=EPS)  # 3.0 rad/s x 0.05 s
    assert limits.stale_s == pytest.approx(0.15, abs=EPS)  # 3 periods x 0.05 s


def test_cell_limits_arm_0_157_hand_0_15_stale_0_15():
    """The cell: arm 3.14 rad/s, hand 3.0 rad/s, 20 Hz, 3 stale periods."""
    arm = GateLimits.from_config(CFG.catcher.arm, CFG.gate, CFG.control_period_s)
    hand = GateLimits.from_config(CFG.thrower.hand, CFG.gate, CFG.control_period_s)
    assert arm.max_step == pytest.approx((0.157,) * 6, abs=EPS)  # 3.14 x 0.05
    assert hand.max_step == pytest.approx((0.15,) * 16, abs=EPS)  # 3.0 x 0.05
    assert arm.stale_s == pytest.approx(0.15, abs=EPS)  # 3 x 0.05


@pytest.mark.parametrize("change, message", [
    ({"lower": (2.0, -1.0)}, "above upper"),
    ({"max_step": (0.15, 0.0)}, "max_step"),
    ({"max_step": (0.15, np.inf)}, "finite"),
    ({"stale_s": 0.0}, "stale_s"),
    ({"names": ("a", "a")}, "distinct"),
    ({"upper": (1.0,)}, "2 values"),
])
def test_limits_refuse_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(AB, **change)


def test_state_and_decision_are_immutable():
    state = hold_state([0.0, 0.0], 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.mode = GateMode.FOLLOWING  # type: ignore[misc]
    with pytest.raises(ValueError):
        state.reference[0] = 1.0
    decision, new = gate_command(AB, state, [0.1, 0.1], 0.05)
    with pytest.raises(ValueError):
        decision.targets[0] = 1.0
    np.testing.assert_array_equal(state.reference, [0.0, 0.0])  # the old state is unchanged
    assert new is not state and new.mode is GateMode.FOLLOWING


# -- rule (c): the step per command -----------------------------------------------------------


def test_rate_limit_from_the_held_position_then_from_the_last_target():
    # holding at 0.0; command 0.9 on both -> 0.0 + 0.15 = 0.15 (the change is cut to max_step)
    state = hold_state([0.0, 0.0], 0.0)
    d1, state = gate_command(AB, state, [0.9, 0.9], 0.05)
    np.testing.assert_allclose(d1.targets, [0.15, 0.15], rtol=0, atol=EPS)
    assert d1.accepted and d1.rate_limited == ("a", "b") and d1.clamped == ()
    np.testing.assert_array_equal(d1.reference, [0.0, 0.0])
    # following: the reference is now the last target 0.15; 0.9 again -> 0.15 + 0.15 = 0.30
    d2, state = gate_command(AB, state, [0.9, 0.9], 0.10)
    np.testing.assert_allclose(d2.targets, [0.30, 0.30], rtol=0, atol=EPS)
    # a small change goes through unchanged: a 0.30 -> 0.20 (0.10 <= 0.15), b 0.30 -> 0.35 (0.05)
    d3, state = gate_command(AB, state, [0.2, 0.35], 0.15)
    np.testing.assert_allclose(d3.targets, [0.2, 0.35], rtol=0, atol=EPS)
    assert d3.rate_limited == () and state.mode is GateMode.FOLLOWING and state.since == 0.15
    # going down is limited the same way: a 0.20 -> -0.9 becomes 0.20 - 0.15 = 0.05
    d4, _ = gate_command(AB, state, [-0.9, 0.35], 0.20)
    np.testing.assert_allclose(d4.targets, [0.05, 0.35], rtol=0, atol=EPS)
    assert d4.rate_limited == ("a",)


# -- rule (b): position limits ------------------------------------------------------------------


def test_clamp_to_limits_then_rate_limit():
    # from 0.95 / -0.95: 5 -> clamp 1.0 (0.05 away: no step limit), -5 -> clamp -1.0
    d1, _ = gate_command(AB, hold_state([0.95, -0.95], 0.0), [5.0, -5.0], 0.05)
    np.testing.assert_array_equal(d1.targets, [1.0, -1.0])
    assert d1.clamped == ("a", "b") and d1.rate_limited == ()
    # from 0.0: 5 -> clamp 1.0 -> step 0.15; 0.0 stays
    d2, _ = gate_command(AB, hold_state([0.0, 0.0], 0.0), [5.0, 0.0], 0.05)
    np.testing.assert_allclose(d2.targets, [0.15, 0.0], rtol=0, atol=EPS)
    assert d2.clamped == ("a",) and d2.rate_limited == ("a",)
    np.testing.assert_array_equal(d2.requested, [5.0, 0.0])


def test_hold_outside_limits_is_kept_and_left_at_most_one_step_at_a_time():
    # held at 1.1 (0.1 above the limit 1.0, like ring joint_9.0 of the default hand pose): the hold
    # keeps 1.1; commanding 1.1 clamps to 1.0, which is 0.1 <= 0.15 away: 1.0
    held = hold_state([1.1, 0.0], 0.0)
    np.testing.assert_array_equal(held.reference, [1.1, 0.0])
    d1, _ = gate_command(AB, held, [1.1, 0.0], 0.05)
    np.testing.assert_array_equal(d1.targets, [1.0, 0.0])
    # held at 1.3 (0.3 outside, more than one step): clamp says 1.0, the step says >= 1.3 - 0.15 = 1.15;
    # the rate rule wins (no jump): 1.15, then 1.0
    d2, s2 = gate_command(AB, hold_state([1.3, 0.0], 0.0), [1.3, 0.0], 0.05)
    np.testing.assert_allclose(d2.targets, [1.15, 0.0], rtol=0, atol=EPS)
    d3, _ = gate_command(AB, s2, [1.3, 0.0], 0.10)
    np.testing.assert_array_equal(d3.targets, [1.0, 0.0])


# -- rule (a): finite targets -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_target_is_refused_and_a_following_group_must_hold(bad):
    state = following([0.15, 0.15], 0.05)
    decision, new = gate_command(AB, state, [bad, 0.2], 0.10)
    assert not decision.accepted and decision.targets is None
    assert "a = " in decision.reason and str(bad) in decision.reason and "not finite" in decision.reason
    assert decision.hold, "a following group must hold"
    assert new is state  # no target changed; the caller holds the measured position:
    held = hold_state([0.14, 0.16], 0.10, why=decision.reason)
    assert held.mode is GateMode.HOLDING
    np.testing.assert_array_equal(held.reference, [0.14, 0.16])
    # already holding: refused again, nothing more to do
    again, same = gate_command(AB, held, [0.1, bad], 0.15)
    assert not again.accepted and not again.hold and same is held and "b = " in again.reason


@pytest.mark.parametrize("targets, message", [
    ([0.1], "needs 2 targets, got 1"),
    ([0.1, 0.2, 0.3], "needs 2 targets, got 3"),
    ([], "needs 2 targets, got 0"),
    (["x", 0.1], "not numbers"),
])
def test_wrong_length_or_not_numbers_is_refused(targets, message):
    decision, _ = gate_command(AB, following([0.0, 0.0], 0.0), targets, 0.05)
    assert not decision.accepted and message in decision.reason and decision.hold


def test_hold_state_refuses_a_measured_position_that_is_not_finite():
    with pytest.raises(ValueError, match="not finite"):
        hold_state([0.0, np.nan], 0.0)


def test_time_not_finite_is_refused():
    decision, _ = gate_command(AB, following([0.0, 0.0], 0.0), [0.0, 0.0], np.nan)
    assert not decision.accepted and "time" in decision.reason


# -- rule (e): names --------------------------------------------------------------------------


def test_names_reorder_into_the_group_order():
    # [b, a] with [0.1, -0.1] means a = -0.1, b = 0.1
    decision, _ = gate_command(AB, hold_state([0.0, 0.0], 0.0), [0.1, -0.1], 0.05, names=["b", "a"])
    assert decision.accepted
    np.testing.assert_array_equal(decision.targets, [-0.1, 0.1])
    np.testing.assert_array_equal(decision.requested, [-0.1, 0.1])


@pytest.mark.parametrize("names, targets, expected", [
    (["a", "a"], [0.1, 0.2], ["duplicate joint names ['a']", "joints ['b'] missing"]),
    (["a", "c"], [0.1, 0.2], ["unknown joints ['c']", "joints ['b'] missing"]),
    (["a"], [0.1], ["joints ['b'] missing"]),
    (["a", "b", "c"], [0.1, 0.2, 0.3], ["unknown joints ['c']"]),
    (["a", "b"], [0.1], ["2 names but 1 targets"]),
])
def test_duplicate_unknown_missing_names_are_refused(names, targets, expected):
    state = following([0.0, 0.0], 0.0)
    decision, new = gate_command(AB, state, targets, 0.05, names=names)
    assert not decision.accepted and decision.hold and new is state
    for text in expected:
        assert text in decision.reason, f"{text!r} not in {decision.reason!r}"


# -- rule (d): staleness ------------------------------------------------------------------------


def test_stale_stream_holds_at_the_measured_position():
    # last command at 1.00 s (target 0.30); stale_s = 0.15 s
    state = following([0.30, 0.30], 1.00)
    held, same = gate_poll(AB, state, 1.10, measured=[0.42, 0.30])  # 0.10 s <= 0.15 s: still following
    assert not held and same is state
    held, state = gate_poll(AB, state, 1.16, measured=[0.42, 0.30])  # 0.16 s > 0.15 s: hold
    assert held and state.mode is GateMode.HOLDING and state.since == 1.16 and "stale" in state.why
    np.testing.assert_array_equal(state.reference, [0.42, 0.30])  # the measured position as is
    held, same = gate_poll(AB, state, 5.0, measured=[0.0, 0.0])  # holding never goes stale
    assert not held and same is state
    # the next command starts from the held 0.42: 0.9 -> 0.42 + 0.15 = 0.57
    decision, state = gate_command(AB, state, [0.9, 0.3], 5.05)
    np.testing.assert_allclose(decision.targets, [0.57, 0.30], rtol=0, atol=EPS)
    assert state.mode is GateMode.FOLLOWING


def test_a_stale_state_refuses_commands_until_polled():
    # without a poll the gate does not know where the joints are after 0.2 s without commands
    state = following([0.30, 0.30], 1.00)
    decision, same = gate_command(AB, state, [0.3, 0.3], 1.20)
    assert not decision.accepted and decision.hold and "stale" in decision.reason and same is state


def test_clock_going_back_holds_in_either_mode():
    # a simulation reset: time goes from 1.5 s back to 0.0 s; the old reference means nothing
    assert "went back" in staleness(AB, following([0.3, 0.3], 1.5), 0.0)
    held, state = gate_poll(AB, following([0.3, 0.3], 1.5), 0.0, measured=[0.0, 0.0])
    assert held and state.mode is GateMode.HOLDING and state.since == 0.0
    held, _ = gate_poll(AB, hold_state([0.3, 0.3], 1.5), 0.0, measured=[0.0, 0.0])
    assert held


# -- the invariants ---------------------------------------------------------------------------


def test_invariants_on_random_commands():
    """Random references (some outside the limits), targets (up to 3 rad, some by name, some not
    finite) and times: every accepted output is finite, within max_step of the reference, and within
    the limits unless the reference is more than one step outside; refusals keep the state."""
    rng = np.random.default_rng(7)
    limits = GateLimits.from_limits(tuple("abcd"), (-1.0, 0.0, 3.14, -2.0), (1.0, 0.001, 3.141, 2.0),
                                    (3.14, 3.14, 3.0, 3.0), 0.05, 3.0)
    lower, upper, step = (np.asarray(v) for v in (limits.lower, limits.upper, limits.max_step))
    accepted = 0
    for _ in range(2000):
        reference = rng.uniform(lower - 0.3, upper + 0.3)
        mode = rng.choice([GateMode.FOLLOWING, GateMode.HOLDING])
        state = GateState(mode, reference, 1.0)
        targets = rng.uniform(-3.0, 3.0, 4)
        if rng.random() < 0.1:
            targets[rng.integers(4)] = rng.choice([np.nan, np.inf])
        names = list(rng.permutation(list(limits.names))) if rng.random() < 0.3 else None
        now = 1.0 + rng.uniform(0.0, 0.2)
        decision, new = gate_command(limits, state, targets, now, names)
        if not decision.accepted:
            assert new is state and decision.targets is None
            continue
        accepted += 1
        out = decision.targets
        assert np.isfinite(out).all()
        assert (np.abs(out - reference) <= step + EPS).all()
        reachable = (reference >= lower - step) & (reference <= upper + step)
        assert (((out >= lower) & (out <= upper)) | ~reachable).all()
        assert new.mode is GateMode.FOLLOWING and new.since == now
    assert accepted > 1000


# -- a mirror behind the cell's gate --------------------------------------------------------------


def test_mirror_arm_jump_of_0_9_rad_is_cut_to_0_157_rad_per_command():
    """catcher joint2 (range -2.059..2.0944 rad, 3.14 rad/s, 20 Hz): from its default -0.09 rad, a
    command to -0.09 + 0.9 = 0.81 rad moves 3.14 x 0.05 = 0.157 rad per command:
    -0.09 -> 0.067 -> 0.224 -> 0.381 -> 0.538 -> 0.695 -> 0.81 (the remaining 0.115 rad fits in one
    step). The other joints are commanded where they are and do not move."""
    from handover.drivers.joint_group import JointGroupInfo
    from handover.drivers.mirror import MirrorJointGroup

    group = CFG.catcher.arm
    info = JointGroupInfo.from_config(group, provides_velocity=True, provides_effort=False,
                                      gate=CFG.gate, control_period_s=CFG.control_period_s)
    device = MirrorJointGroup(info, "mirror/catcher/arm", initial=np.array(group.default))
    device.configure()
    device.activate()
    target = np.array(group.default)
    target[1] += 0.9
    t = 1.0
    for k, joint2 in enumerate([0.067, 0.224, 0.381, 0.538, 0.695, 0.81]):
        sent = device.command(target, t)
        assert sent[1] == pytest.approx(joint2, abs=EPS), f"command {k + 1}"
        np.testing.assert_array_equal(np.delete(sent, 1), np.delete(target, 1))
        assert device.last_gate.rate_limited == (("catcher/joint2",) if k < 5 else ())
        np.testing.assert_array_equal(device.read(t + 0.01).position, sent)  # no lag: where it was sent
        t += CFG.control_period_s


# -- the driver node over DDS -------------------------------------------------------------------

TIMEOUT_S = 5.0


wait_for = functools.partial(support.wait_for, timeout=TIMEOUT_S, poll=0.002)


@pytest.fixture
def driver(ros_context):
    """``driver(side, group)``: a JointGroupNode on a mirror of the cell group, spinning, and a probe
    publishing its commands and recording ``/diagnostics``; returns (node, device, publish, diagnostics)."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState as JointStateMsg

    from handover.drivers.joint_group import JointGroupInfo
    from handover.drivers.joint_group_node import JointGroupNode
    from handover.drivers.mirror import MirrorJointGroup
    from std_msgs.msg import String

    from handover.runtime.ros_interface import Topics, joint_state_msg, qos_command, qos_episode_start, qos_events

    topics = Topics.from_config(CFG)
    spinners = Spinners()

    def spin(node) -> None:
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        spinners.nodes.append(node)
        spinners.spin(executor, node.get_name())

    def make(side: str, group: str):
        g = getattr(getattr(CFG, side), group)
        info = JointGroupInfo.from_config(g, provides_velocity=False, provides_effort=False,
                                          gate=CFG.gate, control_period_s=CFG.control_period_s)
        device = MirrorJointGroup(info, f"mirror/{side}/{group}", initial=np.array(g.default))
        node = JointGroupNode(device, CFG, side, group, context=ros_context)
        probe = Node("gate_probe", context=ros_context)
        pub = probe.create_publisher(JointStateMsg, topics.joint_commands[(side, group)], qos_command())
        diagnostics: list[tuple[str, str]] = []  # (state, message) of this driver
        lock = threading.Lock()

        def on_diag(msg):
            with lock:
                diagnostics.extend((s.values[0].value, s.message) for s in msg.status if s.name == node.get_name())
        probe.create_subscription(DiagnosticArray, topics.diagnostics, on_diag, qos_events())
        start_pub = probe.create_publisher(String, topics.episode_start, qos_episode_start())
        spin(node)
        spin(probe)
        wait_for(lambda: pub.get_subscription_count() >= 1, what="the command subscriber")
        # a driver follows only the commands of an episode whose start it received while up
        wait_for(lambda: start_pub.get_subscription_count() >= 1, what="the episode start subscriber")
        token = "gate_probe/1"
        start_pub.publish(String(data=token))
        wait_for(lambda: node.arming.armed == token, what="the driver armed for the probe's episode")

        def publish(names, targets):
            pub.publish(joint_state_msg(names, 0.0, targets, frame_id=token))

        def diag():
            with lock:
                return list(diagnostics)
        return node, device, publish, diag

    yield make
    spinners.close()


def test_driver_stale_stream_holds_and_says_so(driver):
    node, device, publish, diag = driver("catcher", "arm")
    names = list(CFG.catcher.arm.joints)
    target = np.array(CFG.catcher.arm.default)
    target[1] += 0.9  # a 0.9 rad jump: cut to 0.157 rad
    publish(names, target)
    wait_for(lambda: node.commands_applied == 1, what="the command")
    assert device.last_gate.rate_limited == ("catcher/joint2",) and node.commands_rate_limited == 1
    assert device.gate_state.reference[1] == pytest.approx(-0.09 + 0.157, abs=EPS)
    # no further command: after 3 periods (0.15 s) the state timer's poll holds, and says why
    wait_for(lambda: node.stale_holds == 1, what="the stale hold", timeout=2.0)
    wait_for(lambda: any(s == "holding" and "stale" in m for s, m in diag()), what="the stale hold in the diagnostics")
    assert node.state.value == "holding" and "stale" in node.detail and node.command_topic in node.detail
    assert device.gate_state.mode is GateMode.HOLDING
    # the next command follows again, from the held position
    publish(names, target)
    wait_for(lambda: node.commands_applied == 2, what="the next command")
    assert node.state.value == "running"
    assert device.gate_state.reference[1] == pytest.approx(-0.09 + 2 * 0.157, abs=EPS)


def test_driver_refuses_duplicate_and_unknown_names_and_keeps_running(driver):
    node, device, publish, diag = driver("thrower", "hand")
    names = list(CFG.thrower.hand.joints)
    target = np.array(CFG.thrower.hand.default)
    publish(names, target)
    wait_for(lambda: node.commands_applied == 1, what="the first command")
    duplicate = [names[0]] + names[:-1]
    publish(duplicate, target)
    wait_for(lambda: node.commands_rejected == 1, what="the refusal")
    assert node.state.value == "fault"
    assert node.command_topic in node.detail and "duplicate" in node.detail and names[0] in node.detail
    assert device.gate_state.mode is GateMode.HOLDING  # refused while following: holds
    wait_for(lambda: any(s == "fault" and "duplicate" in m for s, m in diag()), what="the refusal in the diagnostics")
    publish(names[:-1] + ["thrower/joint_99.0"], target)
    wait_for(lambda: node.commands_rejected == 2, what="the second refusal")
    assert "unknown" in node.detail and "thrower/joint_99.0" in node.detail
    publish(names[::-1], target[::-1])  # reversed names: matched by name
    wait_for(lambda: node.commands_applied == 2, what="the good command")
    assert node.state.value == "running"
    np.testing.assert_allclose(device.last_gate.targets,
                               np.clip(target, CFG.thrower.hand.lower, CFG.thrower.hand.upper), rtol=0, atol=EPS)
