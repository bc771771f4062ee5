"""One test per rule and per quirk of dynamic-handover-contract.md.

Expected numbers are worked out by hand in each test (from the limits in launch/cell.yaml, which
restate robot-cell.md), never by calling the code under test.
"""

import dataclasses

import numpy as np
import pytest

from handover.runtime.action import ActionMapper
from handover.runtime.cell_config import load_cell_config
from handover.runtime.contract import ContractSpec
from handover.runtime.contract_state import ContractState
from handover.runtime.observation import FrameStack, ObjectHistory, agent_inputs, build_frame

DEFAULT_ARM = [0.0, -0.09, -0.09, 3.141, 2.00, -1.57]
DEFAULT_HAND = [-0.03989830748810656, 1.3495253790945758, 0.8659920759388671, 0.780414711365591,
                0.9655586519308622, 1.0139016439397597, 0.8501943208059994, 1.3264760744914152,
                -0.20482272250532974, 1.347864170294202, 0.6030536585610538, 0.9181400800651911,
                -0.21341465375119012, 1.7199185039090872, 1.2686849760515697, 0.8245164874462315]
BASE = np.array([0.0, 0.0, 0.2])


@pytest.fixture(scope="module")
def spec():
    return ContractSpec.from_config(load_cell_config())


def q_side(arm=DEFAULT_ARM, hand=DEFAULT_HAND):
    return np.array(list(arm) + list(hand), dtype=np.float32)


def frame_for(spec, tq=None, cq=None, goal=(0.0, 0.0, 0.2), history=None, pred=(0, 0, 0)):
    tq = q_side() if tq is None else tq
    cq = q_side() if cq is None else cq
    history = np.zeros((20, 3), np.float32) if history is None else history
    return build_frame(spec, tq, cq, np.array(goal), history, np.array(pred))


# --------------------------------------------------------------------------- observation


def test_frame_is_300_float32(spec):
    f = frame_for(spec)
    assert f.shape == (300,) and f.dtype == np.float32


def test_thrower_hand_joints_are_unscaled_with_thrower_limits(spec):
    hand = list(DEFAULT_HAND)
    hand[0] = 0.235  # joint_0.0 in [-0.47, 0.47]: (0.47 - 0) / 0.94 = 0.5
    hand[1] = 1.61  # joint_1.0 upper limit -> 1
    hand[2] = -0.174  # joint_2.0 lower limit -> -1
    hand[12] = 0.8295  # joint_12.0 in [0.263, 1.396], midpoint -> 0
    hand[13] = 1.7199185039090872  # joint_13.0 in [-0.105, 1.163]: (3.4398370 - 1.058) / 1.268 = 1.878420
    f = frame_for(spec, tq=q_side(hand=hand))
    np.testing.assert_allclose(f[6:10], [0.5, 1.0, -1.0, f[9]], atol=1e-6)
    assert f[18] == pytest.approx(0.0, abs=1e-6)
    assert f[19] == pytest.approx(1.878420, abs=1e-5)  # not clipped in the frame itself


def test_quirk_thrower_arm_only_joints_2_and_3_visible_raw(spec):
    arm = [0.0005, 0.30, -0.50, 3.1405, 2.0005, -1.5705]
    f = frame_for(spec, tq=q_side(arm=arm))
    np.testing.assert_allclose(f[0:6], [0.0, 0.30, -0.50, 0.0, 0.0, 0.0], atol=1e-7)


def test_thrower_goal_is_relative_to_thrower_base(spec):
    f = frame_for(spec, goal=(0.1, -0.5, 0.7))
    np.testing.assert_allclose(f[22:25], [0.1, -0.5, 0.5], atol=1e-7)


def test_thrower_part_is_zero_elsewhere(spec):
    f = frame_for(spec, goal=(1, 2, 3), pred=(4, 5, 6), history=np.ones((20, 3), np.float32))
    assert not f[25:150].any()


def test_quirk_catcher_hand_is_unscaled_with_the_throwers_limits(spec):
    # Give the catcher very different hand limits: the frame must still use the thrower's.
    other = dataclasses.replace(
        spec,
        lower=np.concatenate([spec.lower[:28], np.full(16, -3.0, np.float32)]),
        upper=np.concatenate([spec.upper[:28], np.full(16, 3.0, np.float32)]),
    )
    hand = list(DEFAULT_HAND)
    hand[0] = 0.235  # thrower joint_0.0 limits [-0.47, 0.47] -> 0.5 (catcher limits would give 0.0783)
    hand[4] = -0.47  # -> -1 (catcher limits: -0.1567)
    f = frame_for(other, cq=q_side(hand=hand))
    assert f[156] == pytest.approx(0.5, abs=1e-6)
    assert f[160] == pytest.approx(-1.0, abs=1e-6)


def test_quirk_catcher_arm_raw_with_joints_1_and_4_zeroed(spec):
    arm = [0.0007, 1.2, -2.5, 3.1405, -1.0, -1.3]
    f = frame_for(spec, cq=q_side(arm=arm))
    np.testing.assert_allclose(f[150:156], [0.0, 1.2, -2.5, 0.0, -1.0, -1.3], atol=1e-7)


def test_quirk_catcher_sees_history_entries_12_to_15(spec):
    # entry i = (i, 10 i, 100 i): the newest is 19; entries 12..15 are 7..4 steps old.
    history = np.array([[i, 10 * i, 100 * i] for i in range(20)], np.float32)
    f = frame_for(spec, history=history)
    np.testing.assert_array_equal(
        f[248:260], [12, 120, 1200, 13, 130, 1300, 14, 140, 1400, 15, 150, 1500]
    )


def test_catcher_predicted_goal_slot(spec):
    f = frame_for(spec, pred=(0.03, -1.1, 0.25))
    np.testing.assert_allclose(f[260:263], [0.03, -1.1, 0.25], atol=1e-7)


def test_catcher_part_is_zero_elsewhere(spec):
    f = frame_for(spec, goal=(1, 2, 3), pred=(4, 5, 6), history=np.ones((20, 3), np.float32))
    assert not f[172:248].any()
    assert not f[263:300].any()


def test_history_is_relative_to_thrower_base_oldest_first_and_fifo():
    h = ObjectHistory(BASE)
    assert not h.flat().any()
    for i in range(22):  # 22 pushes: the first two fall out
        h.push([i * 0.01, -0.38, 0.45])
    flat = h.flat()
    assert flat.shape == (60,)
    np.testing.assert_allclose(flat[:3], [0.02, -0.38, 0.25], atol=1e-6)  # oldest = push 2
    np.testing.assert_allclose(flat[-3:], [0.21, -0.38, 0.25], atol=1e-6)  # newest = push 21


def test_history_zeroed_at_reset():
    h = ObjectHistory(BASE)
    h.push([1.0, 2.0, 3.0])
    h.reset()
    assert not h.flat().any()


def test_stack_order_is_current_previous_before():
    s = FrameStack()
    for v in (1.0, 2.0, 3.0):
        out = s.push(np.full(300, v, np.float32))
    assert out.shape == (900,)
    assert (out[:300] == 3).all() and (out[300:600] == 2).all() and (out[600:] == 1).all()


def test_quirk_stack_not_cleared_at_episode_reset(spec):
    state = ContractState(spec)
    state.reset()
    state.push_object([0.025, -0.38, 0.449])
    state.inputs(q_side(), q_side(), np.array([0.1, -0.5, 0.7]), np.zeros(3))
    state.reset()  # a new episode
    state.push_object([0.025, -0.38, 0.449])
    t_in, _ = state.inputs(q_side(), q_side(), np.array([0.1, -0.5, 0.9]), np.zeros(3))
    # previous-frame block of the thrower input (150..299) still holds the old episode's goal.
    np.testing.assert_allclose(t_in[150 + 22:150 + 25], [0.1, -0.5, 0.5], atol=1e-7)
    np.testing.assert_allclose(t_in[22:25], [0.1, -0.5, 0.7], atol=1e-7)


def test_agent_inputs_are_clipped_to_plus_minus_5():
    obs = np.zeros(900, np.float32)
    obs[0], obs[1], obs[200], obs[899] = 7.5, -12.0, 4.9, -5.01
    t, c = agent_inputs(obs)
    assert t[0] == 5.0 and t[1] == -5.0
    assert c[50] == pytest.approx(4.9) and c[449] == -5.0


def test_agent_inputs_split():
    obs = np.arange(900, dtype=np.float32) / 1000.0  # stays inside the clip range
    t, c = agent_inputs(obs)
    expect_t = np.concatenate([np.arange(0, 150), np.arange(300, 450), np.arange(600, 750)]) / 1000.0
    expect_c = np.concatenate([np.arange(150, 300), np.arange(450, 600), np.arange(750, 900)]) / 1000.0
    np.testing.assert_allclose(t, expect_t, atol=1e-7)
    np.testing.assert_allclose(c, expect_c, atol=1e-7)
    assert t.shape == c.shape == (450,) and t.dtype == np.float32


# --------------------------------------------------------------------------- action


def test_reset_targets_are_the_default_pose(spec):
    m = ActionMapper(spec)
    t = m.reset()
    np.testing.assert_allclose(t[0:6], DEFAULT_ARM, atol=1e-6)
    np.testing.assert_allclose(t[22:28], DEFAULT_ARM, atol=1e-6)
    # Default hand entries inside their limits are kept as they are...
    inside = [i for i in range(16) if i not in (4, 12, 13)]
    np.testing.assert_allclose(t[[6 + i for i in inside]], [DEFAULT_HAND[i] for i in inside], atol=1e-6)
    # ...the three default hand joints outside the training limits (joint_4.0 0.966 > 0.47,
    # joint_12.0 -0.213 < 0.263, joint_13.0 1.720 > 1.163) are clamped: never commanded outside.
    assert t[10] == pytest.approx(0.47) and t[18] == pytest.approx(0.263) and t[19] == pytest.approx(1.163)


def test_thrower_hand_is_absolute_scale(spec):
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[6], a[7], a[8] = -1.0, 1.0, 0.5  # joint_0.0 -> -0.47; joint_1.0 -> 1.61; joint_2.0 -> 0.75*1.883-0.174
    out = m.apply(a)
    assert out[6] == pytest.approx(-0.47)
    assert out[7] == pytest.approx(1.61)
    assert out[8] == pytest.approx(1.23825, abs=1e-6)
    assert out[9] == pytest.approx((1.618 - 0.227) / 2, abs=1e-6)  # a = 0 -> midpoint 0.6955


def test_quirk_thrower_arm_joints_1_2_relative_with_gain_2(spec):
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[1], a[2] = 0.1, -0.2  # joint2: -0.09 + 0.2 = 0.11; joint3: -0.09 - 0.4 = -0.49
    out = m.apply(a)
    assert out[1] == pytest.approx(0.11, abs=1e-6)
    assert out[2] == pytest.approx(-0.49, abs=1e-6)
    out = m.apply(a)  # relative to the previous target: 0.31, -0.89
    assert out[1] == pytest.approx(0.31, abs=1e-6)
    assert out[2] == pytest.approx(-0.89, abs=1e-6)


def test_other_thrower_arm_joints_keep_previous_target(spec):
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[0], a[3], a[4], a[5] = 1.0, -1.0, 1.0, -1.0
    out = m.apply(a)
    np.testing.assert_allclose(out[[0, 3, 4, 5]], [0.0, 3.141, 2.0, -1.57], atol=1e-6)


def test_catcher_arm_relative_gain_0_1(spec):
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[23], a[24], a[27] = 0.5, -1.0, 0.3  # -0.09+0.05; -0.09-0.1; -1.57+0.03
    out = m.apply(a)
    np.testing.assert_allclose(out[[23, 24, 27]], [-0.04, -0.19, -1.54], atol=1e-6)
    out = m.apply(a)
    np.testing.assert_allclose(out[[23, 24, 27]], [0.01, -0.29, -1.51], atol=1e-6)


def test_catcher_hand_scaled_with_thrower_hand_limits(spec):
    other = dataclasses.replace(
        spec,
        lower=np.concatenate([spec.lower[:28], np.full(16, -3.0, np.float32)]),
        upper=np.concatenate([spec.upper[:28], np.full(16, 3.0, np.float32)]),
    )
    m = ActionMapper(other)
    a = np.zeros(44, np.float32)
    a[28], a[29] = 1.0, -1.0  # thrower joint_0.0 upper 0.47, joint_1.0 lower -0.196
    out = m.apply(a)
    assert out[28] == pytest.approx(0.47) and out[29] == pytest.approx(-0.196)


def test_actions_are_clipped_to_plus_minus_1(spec):
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[6], a[23] = 3.0, 7.0  # as if 1.0: joint_0.0 -> 0.47; catcher joint2 -> -0.09 + 0.1
    out = m.apply(a)
    assert out[6] == pytest.approx(0.47)
    assert out[23] == pytest.approx(0.01, abs=1e-6)


def test_targets_clamped_to_each_sides_limits(spec):
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[1] = 1.0  # thrower joint2: -0.09 + 2 = 1.91 -> upper 0.41
    a[2] = -1.0  # thrower joint3: -0.09 - 2 -> lower -1.0
    out = m.apply(a)
    assert out[1] == pytest.approx(0.41) and out[2] == pytest.approx(-1.0)
    a[:] = 0
    a[27] = 1.0  # catcher joint6: -1.57 + 0.1 per step; upper -1.17 reached after 4 steps
    for _ in range(6):
        out = m.apply(a)
    assert out[27] == pytest.approx(-1.17)
    # The same step on the thrower's joint6 would have been held at its own upper limit -1.570.


def test_reset_restores_defaults_after_actions(spec):
    m = ActionMapper(spec)
    a = np.full(44, 0.7, np.float32)
    m.apply(a)
    out = m.reset()
    assert out[1] == pytest.approx(-0.09) and out[23] == pytest.approx(-0.09)


def test_limits_and_defaults_restate_robot_cell(spec):
    # Spot checks against robot-cell.md (thrower joint3 range, catcher joint5 range, thumb joint_12.0).
    assert (spec.lower[2], spec.upper[2]) == pytest.approx((-1.0, -0.09))
    assert (spec.lower[26], spec.upper[26]) == pytest.approx((-1.69297, 3.14159265359))
    assert (spec.lower[18], spec.upper[18]) == pytest.approx((0.263, 1.396))
    np.testing.assert_allclose(spec.thrower_base, [0.0, 0.0, 0.2])
