"""The mirroring backends pass both conformance suites, and mirror exactly what they promise:
lag, dropped feedback, tracker latency and invalid frames. Units: rad, s, m."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from handover.drivers.conformance import (
    JointGroupConformance,
    check_command_gate,
    JointGroupHarness,
    ObjectTrackerConformance,
    ObjectTrackerHarness,
)
from handover.drivers.device import DeviceFault, Lifecycle
from handover.drivers.joint_group import JointGroupInfo
from handover.drivers.mirror import MirrorJointGroup, MirrorObjectTracker
from handover.runtime.cell_config import JointGroupConfig, load_cell_config

CFG = load_cell_config()


class Clock:
    """Simulated time (s) for the caller's clock."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


def info_of(group: JointGroupConfig) -> JointGroupInfo:
    """Names, limits and gate settings of a cell joint group (the mirror sets the provides_* flags itself)."""
    return JointGroupInfo.from_config(group, provides_velocity=False, provides_effort=False,
                                      gate=CFG.gate, control_period_s=CFG.control_period_s)


def mirror_of(group: JointGroupConfig, name: str, **kwargs) -> MirrorJointGroup:
    """A mirror of a cell joint group starting at its default pose, behind the cell's command gate."""
    return MirrorJointGroup(info_of(group), name, initial=np.array(group.default), **kwargs)


def ungated_mirror_of(group: JointGroupConfig, name: str, **kwargs) -> MirrorJointGroup:
    """The same with a gate that only clamps (1e6 rad/s, never stale): for the mirror's own timing
    tests, which jump between far targets at arbitrary times."""
    info = dataclasses.replace(info_of(group), velocity_limit=(1e6,) * len(group.joints), stale_periods=1e9)
    return MirrorJointGroup(info, name, initial=np.array(group.default), **kwargs)


# -------------------------------------------------------------------------------------------------
# Conformance

# (group, lag_s, provide_velocity, provide_effort): the real arm/hand limits, with and without lag
# and optional data. The catcher hand starts outside its limits (the cell's default pose).
VARIANTS = {
    "thrower_arm": (CFG.thrower.arm, 0.0, True, False),
    "catcher_arm_lag": (CFG.catcher.arm, 0.05, False, True),
    "catcher_hand_lag": (CFG.catcher.hand, 0.02, True, True),
    "thrower_hand_bare": (CFG.thrower.hand, 0.0, False, False),
}


@pytest.fixture(params=list(VARIANTS))
def joint_group_harness(request) -> JointGroupHarness:
    group, lag_s, velocity, effort = VARIANTS[request.param]
    clock = Clock(t=10.0)
    device = mirror_of(group, request.param, lag_s=lag_s, provide_velocity=velocity, provide_effort=effort)
    return JointGroupHarness(device=device, now=clock.now, advance=clock.advance,
                             settle_s=2 * lag_s + 0.01, tolerance=1e-9, make_failing=device.fail_next)


class TestMirrorJointGroup(JointGroupConformance):
    pass


def throw(t: float) -> np.ndarray | None:
    """A ballistic flight (m) visible except between 0.2 s and 0.3 s (occluded)."""
    if 0.2 <= t < 0.3:
        return None
    return np.array([0.0, -1.0 * t, 0.5 + 2.0 * t - 4.905 * t * t])


@pytest.fixture
def object_tracker_harness() -> ObjectTrackerHarness:
    clock = Clock()
    device = MirrorObjectTracker(throw, "mirror_tracker", latency_s=0.03)
    return ObjectTrackerHarness(device=device, now=clock.now, advance=clock.advance, period_s=1 / 90,
                                observe_s=0.5, make_failing=device.fail_next)


class TestMirrorObjectTracker(ObjectTrackerConformance):
    pass


# -------------------------------------------------------------------------------------------------
# Mirror specifics


@pytest.fixture
def arm() -> MirrorJointGroup:
    device = ungated_mirror_of(CFG.catcher.arm, "arm", lag_s=0.25)
    device.configure()
    device.activate()
    return device


def targets(arm: MirrorJointGroup, fraction: float) -> np.ndarray:
    lower, upper = np.asarray(arm.info.lower), np.asarray(arm.info.upper)
    return lower + fraction * (upper - lower)


def test_state_follows_command_exactly_lag_later(arm):
    initial = np.array(CFG.catcher.arm.default)
    a, b, c = targets(arm, 0.2), targets(arm, 0.5), targets(arm, 0.8)
    arm.command(a, 1.0)
    np.testing.assert_array_equal(arm.read(1.0).position, initial)
    np.testing.assert_array_equal(arm.read(1.2499).position, initial)
    np.testing.assert_array_equal(arm.read(1.25).position, a)
    arm.command(b, 1.5)
    arm.command(c, 1.5625)  # two commands inside one lag: each shows for its own time
    np.testing.assert_array_equal(arm.read(1.7499).position, a)
    np.testing.assert_array_equal(arm.read(1.75).position, b)
    np.testing.assert_array_equal(arm.read(1.8125).position, c)
    assert arm.read(1.9).stamp == 1.9  # stamp: the time of the measurement


def test_velocity_is_finite_difference_and_effort_absent_unless_provided(arm):
    first = arm.read(0.0)
    np.testing.assert_array_equal(first.velocity, np.zeros(6))
    assert first.effort is None and arm.info.provides_velocity and not arm.info.provides_effort
    a = targets(arm, 0.5)
    arm.command(a, 0.0)
    second = arm.read(0.5)
    np.testing.assert_allclose(second.velocity, (a - first.position) / 0.5)
    np.testing.assert_array_equal(arm.read(1.0).velocity, np.zeros(6))


def test_provide_flags_override_info():
    bare = mirror_of(CFG.thrower.hand, "hand", provide_velocity=False, provide_effort=True)
    assert not bare.info.provides_velocity and bare.info.provides_effort
    assert bare.info.names == CFG.thrower.hand.joints
    bare.configure()
    state = bare.read(0.0)
    assert state.velocity is None
    np.testing.assert_array_equal(state.effort, np.zeros(16))


def test_reads_at_the_same_time_are_the_same_measurement_and_read_only(arm):
    first = arm.read(2.0)
    assert arm.read(2.0) is first
    with pytest.raises(ValueError):
        first.position[0] = 1.0  # handed out twice: nobody may change it


def test_time_going_back_keeps_stamps_and_commands_in_order(arm):
    late = arm.read(3.0)
    early = arm.read(2.0)  # allowed: answered as at 3.0
    assert early.stamp == 3.0
    np.testing.assert_array_equal(early.position, late.position)
    a = targets(arm, 0.6)
    arm.command(a, 2.0)  # treated as issued at 3.0, so it applies at 3.25
    np.testing.assert_array_equal(arm.read(3.2499).position, late.position)
    np.testing.assert_array_equal(arm.read(3.25).position, a)


def test_dropped_feedback_is_stale_then_resumes(arm):
    before = arm.read(1.0)
    arm.drop_feedback = True
    a = targets(arm, 0.3)
    arm.command(a, 1.0)  # commands still work while feedback is gone
    for now in (1.1, 1.5, 2.0):
        stale = arm.read(now)
        assert stale.stamp == before.stamp
        np.testing.assert_array_equal(stale.position, before.position)
    arm.drop_feedback = False
    fresh = arm.read(2.5)
    assert fresh.stamp == 2.5
    np.testing.assert_array_equal(fresh.position, a)
    np.testing.assert_allclose(fresh.velocity, (a - before.position) / 1.5)


def test_feedback_dropped_from_the_start_reports_no_measurement():
    device = mirror_of(CFG.catcher.arm, "arm", drop_feedback=True)
    device.configure()
    state = device.read(1.0)
    assert state.stamp == -np.inf
    np.testing.assert_array_equal(state.position, CFG.catcher.arm.default)


def test_fail_next_faults_once(arm):
    arm.fail_next(ConnectionResetError("cable unplugged"))
    with pytest.raises(DeviceFault, match="cable unplugged"):
        arm.read(0.0)
    assert arm.state is Lifecycle.FAULT and "ConnectionResetError" in arm.fault_reason
    arm.close()
    arm.configure()
    arm.read(0.0)  # the injected failure was used up


@pytest.mark.parametrize("kwargs", [{"initial": np.zeros(5)}, {"initial": np.full(6, np.nan)}, {"lag_s": -0.1}])
def test_constructor_rejects_bad_values(kwargs):
    args = {"info": info_of(CFG.catcher.arm), "name": "arm", "initial": np.zeros(6)} | kwargs
    with pytest.raises(ValueError, match="arm"):
        MirrorJointGroup(**args)


# -------------------------------------------------------------------------------------------------
# The command gate on a mirror, with the cell's numbers


def test_check_command_gate_runs_every_check_on_one_device():
    """The one-function form of the gate checks (what a backend without the class suite calls)."""
    clock = Clock(t=5.0)
    device = mirror_of(CFG.catcher.hand, "hand", lag_s=0.02)
    check_command_gate(JointGroupHarness(device=device, now=clock.now, advance=clock.advance, settle_s=0.05,
                                         tolerance=1e-9))
    assert device.state is Lifecycle.UNCONFIGURED


def test_hold_at_default_hand_pose_keeps_it_outside_limits_then_one_step_clamps_it():
    """The default hand pose has ring joint_9.0 at 1.7199 rad, above its upper limit 1.61 rad. A hold
    targets it as is; the next command for the default pose clamps it to 1.61 (0.11 rad: within one
    3.0 rad/s x 0.05 s = 0.15 rad step)."""
    device = mirror_of(CFG.catcher.hand, "hand")
    device.configure()
    device.activate()
    k = CFG.catcher.hand.joints.index("catcher/joint_9.0")
    default = np.array(CFG.catcher.hand.default)
    assert default[k] > CFG.catcher.hand.upper[k]
    held = device.hold(0.0)
    np.testing.assert_array_equal(held, default)
    sent = device.command(default, 0.05)
    assert sent[k] == CFG.catcher.hand.upper[k] == 1.61
    assert device.last_gate.clamped == ("catcher/joint_9.0",) and device.last_gate.rate_limited == ()


def test_stale_stream_holds_where_the_mirror_is():
    """Commands every 0.05 s, then none: a poll 0.1 s after the last is not stale (<= 3 x 0.05 s),
    one 0.2 s after it holds the measured position."""
    device = mirror_of(CFG.thrower.hand, "hand", lag_s=0.02)
    device.configure()
    device.activate()
    target = np.array(CFG.thrower.hand.default) + 0.05
    for t in (0.0, 0.05, 0.1):
        device.command(target, t)
    assert device.poll(0.2) is None
    reason = device.poll(0.3)
    assert "stale" in reason and "0.2 s" in reason
    np.testing.assert_array_equal(device.gate_state.reference, device.read(0.3).position)
    assert device.gate_state.mode.value == "holding" and device.stale_holds == 1


@pytest.fixture
def tracker() -> MirrorObjectTracker:
    device = MirrorObjectTracker(throw, "tracker", latency_s=0.03125)
    device.configure()
    return device


def test_tracker_reports_capture_latency_late(tracker):
    obs = tracker.read(0.53125)
    assert obs.valid and obs.stamp == 0.5
    np.testing.assert_array_equal(obs.position, throw(0.5))


def test_tracker_invalid_frames_have_no_position(tracker):
    obs = tracker.read(0.25 + 0.03125)
    assert not obs.valid and obs.position is None and obs.stamp == 0.25
    assert tracker.read(0.3 + 0.03125).valid  # visible again


def test_tracker_bad_trajectory_output_faults():
    device = MirrorObjectTracker(lambda t: np.array([0.0, np.nan, 1.0]), "tracker")
    device.configure()
    with pytest.raises(DeviceFault, match="3 finite values"):
        device.read(0.0)
    assert device.state is Lifecycle.FAULT
