"""One test per rule and per quirk of dynamic-handover-contract.md.

Expected numbers are worked out by hand in each test (from the limits in launch/cell.yaml, which
restate robot-cell.md), never by calling the code under test.
"""

import dataclasses

import numpy as np
import pytest

from handover.runtime.action import ActionMapper
from handover.runtime.cell_config import load_cell_config
from handover.runtime.contract import CONTRACT_VERSION, ContractSpec
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
    # Hand slots are the simulator's DOF order: index joint_0.0-3.0 (slots 0-3, frame 6-9), thumb
    # joint_12.0-15.0 (slots 4-7, frame 10-13), middle joint_4.0-7.0 (slots 8-11, frame 14-17),
    # ring joint_8.0-11.0 (slots 12-15, frame 18-21). unscale(x) = (2x - hi - lo) / (hi - lo).
    hand = list(DEFAULT_HAND)
    hand[0] = 0.235  # joint_0.0 in [-0.47, 0.47]: (0.47 - 0) / 0.94 = 0.5
    hand[1] = 1.61  # joint_1.0 upper limit -> 1
    hand[2] = -0.174  # joint_2.0 lower limit -> -1
    # slot 3, joint_3.0 in [-0.227, 1.618], default 0.780414711365591:
    #   (1.560829422731182 - 1.391) / 1.845 = 0.169829422731182 / 1.845 = 0.0920484
    hand[4] = 0.8295  # thumb joint_12.0 in [0.263, 1.396], midpoint (0.263 + 1.396) / 2 -> 0
    hand[5] = 1.7199185039090872  # thumb joint_13.0 in [-0.105, 1.163]: (3.4398370 - 1.058) / 1.268 = 1.878420
    hand[8] = 0.47  # middle joint_4.0 in [-0.47, 0.47]: upper -> 1
    # slot 13, ring joint_9.0 in [-0.196, 1.61], default 1.7199185039090872 (outside):
    #   (3.4398370078 - 1.414) / 1.806 = 2.0258370078 / 1.806 = 1.1217259
    f = frame_for(spec, tq=q_side(hand=hand))
    np.testing.assert_allclose(f[6:9], [0.5, 1.0, -1.0], atol=1e-6)
    assert f[9] == pytest.approx(0.0920484, abs=1e-5)
    assert f[10] == pytest.approx(0.0, abs=1e-6)
    assert f[11] == pytest.approx(1.878420, abs=1e-5)  # not clipped in the frame itself
    assert f[14] == pytest.approx(1.0, abs=1e-6)
    assert f[19] == pytest.approx(1.1217259, abs=1e-5)  # the default's one out-of-limits slot, not clipped


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
    hand[0] = 0.235  # slot 0, thrower joint_0.0 limits [-0.47, 0.47] -> 0.5 (catcher limits would give 0.0783)
    hand[4] = 0.263  # slot 4, thumb joint_12.0 lower limit [0.263, 1.396] -> -1 (catcher limits: 0.0877)
    hand[8] = -0.47  # slot 8, middle joint_4.0 [-0.47, 0.47] -> -1 (catcher limits: -0.1567)
    f = frame_for(other, cq=q_side(hand=hand))
    assert f[156] == pytest.approx(0.5, abs=1e-6)  # 150 + 6 + 0
    assert f[160] == pytest.approx(-1.0, abs=1e-6)  # 150 + 6 + 4
    assert f[164] == pytest.approx(-1.0, abs=1e-6)  # 150 + 6 + 8


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
    # In slot order only one default hand entry lies outside its limits: slot 13, ring joint_9.0,
    # 1.7199 > 1.61 (checked slot by slot in test_cell_config). All the others are kept as they are...
    inside = [i for i in range(16) if i != 13]
    for side in (6, 28):  # thrower hand 6..21, catcher hand 28..43 (reset has no catcher-hand quirk)
        np.testing.assert_allclose(t[[side + i for i in inside]], [DEFAULT_HAND[i] for i in inside], atol=1e-6)
        # ...and the one outside is clamped to joint_9.0's upper limit 1.61: never commanded outside.
        assert t[side + 13] == pytest.approx(1.61)


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
    # a[28], a[29] are scaled with the thrower's slot 0/1 limits (joint_0.0 upper 0.47, joint_1.0
    # lower -0.196; the catcher's [-3, 3] would give 3 and -3) and, by the catcher-hand quirk
    # (cur[28:44] = cur[22:38]), land in catcher hand slots 6 and 7 (44-index 34, 35), inside [-3, 3].
    a[28], a[29] = 1.0, -1.0
    out = m.apply(a)
    assert out[34] == pytest.approx(0.47) and out[35] == pytest.approx(-0.196)
    # The clamp after the quirk uses the catcher's limits per slot: hand slot 3 (44-index 31) gets the
    # catcher arm joint4 target 3.141 (a[25] = 0 keeps it), clamped to the catcher's 3.0 here (the
    # thrower's joint_3.0 upper 1.618 would not apply).
    assert out[31] == pytest.approx(3.0)


# Catcher-hand quirk (contract "Action"): with m = 1, cur[28:44] = cur[22:38] (a copy of this step's
# values, before the clamp), then every catcher target is clamped to the catcher's limits per slot.
# Hand slot limits (slot order, identical for both hands):
#   0 joint_0.0 [-0.47, 0.47]    1 joint_1.0 [-0.196, 1.61]   2 joint_2.0 [-0.174, 1.709]  3 joint_3.0 [-0.227, 1.618]
#   4 joint_12.0 [0.263, 1.396]  5 joint_13.0 [-0.105, 1.163] 6 joint_14.0 [-0.189, 1.644] 7 joint_15.0 [-0.162, 1.719]
#   8 joint_4.0 [-0.47, 0.47]    9 joint_5.0 [-0.196, 1.61]  10 joint_6.0 [-0.174, 1.709] 11 joint_7.0 [-0.227, 1.618]
#  12 joint_8.0 [-0.47, 0.47]   13 joint_9.0 [-0.196, 1.61]  14 joint_10.0 [-0.174, 1.709] 15 joint_11.0 [-0.227, 1.618]
QUIRK_ARM = [0.5, -1.0, 0.3, 1.0, 0.2, -0.4]  # a[22:28]
QUIRK_HAND = [0.5, -0.5, 0.2, -0.2, 1.0, -1.0, 0.0, 0.4, -0.6, 0.8]  # a[28:38]; a[38:44] set per test


def quirk_action(tail=(0.9, -0.9, 0.3, -0.3, 0.7, -0.7)):
    a = np.zeros(44, np.float32)
    a[22:28] = QUIRK_ARM
    a[28:38] = QUIRK_HAND
    a[38:44] = tail
    return a


def test_quirk_catcher_hand_slots_0_to_5_get_the_catcher_arm_targets(spec):
    m = ActionMapper(spec)
    out = m.apply(quirk_action())
    # Catcher arm, from the default [0, -0.09, -0.09, 3.141, 2.00, -1.57] + 0.1 * a[22:28]:
    #   unclamped [0.05, -0.19, -0.06, 3.241, 2.02, -1.61]
    #   clamped to the catcher arm limits [-0, 0.001] [-2.059, 2.0944] [-3.927, 0.19198] [3.140, 3.141]
    #   [-1.69297, 3.14159] [-1.97, -1.17] -> [0.001, -0.19, -0.06, 3.141, 2.02, -1.61]
    np.testing.assert_allclose(out[22:28], [0.001, -0.19, -0.06, 3.141, 2.02, -1.61], atol=1e-6)
    # Catcher hand slots 0..5 (44-index 28..33) = the unclamped arm values (the copy is taken before
    # the clamp), clamped to the hand slot limits:
    #   slot 0 joint_0.0:  0.05  -> 0.05 (the arm's clamped 0.001 would mean the copy came after the clamp)
    #   slot 1 joint_1.0: -0.19  -> -0.19
    #   slot 2 joint_2.0: -0.06  -> -0.06
    #   slot 3 joint_3.0:  3.241 -> upper 1.618
    #   slot 4 joint_12.0: 2.02  -> upper 1.396
    #   slot 5 joint_13.0: -1.61 -> lower -0.105
    np.testing.assert_allclose(out[28:34], [0.05, -0.19, -0.06, 1.618, 1.396, -0.105], atol=1e-6)


def test_quirk_catcher_hand_slots_6_to_15_get_the_actions_meant_for_slots_0_to_9(spec):
    m = ActionMapper(spec)
    out = m.apply(quirk_action())
    # slot k (6..15) = scale(a[28 + k - 6], limits of hand slot k - 6), then clamped to slot k's limits;
    # scale(a, lo, hi) = (a + 1) / 2 * (hi - lo) + lo.
    expected = [
        0.235,  # slot 6:  scale(0.5, joint_0.0) = 0.75 * 0.94 - 0.47 = 0.235; joint_14.0 keeps it
        0.2555,  # slot 7:  scale(-0.5, joint_1.0) = 0.25 * 1.806 - 0.196 = 0.2555; joint_15.0 keeps it
        0.47,  # slot 8:  scale(0.2, joint_2.0) = 0.6 * 1.883 - 0.174 = 0.9558 -> joint_4.0 upper 0.47
        0.511,  # slot 9:  scale(-0.2, joint_3.0) = 0.4 * 1.845 - 0.227 = 0.511; joint_5.0 keeps it
        1.396,  # slot 10: scale(1.0, joint_12.0) = 1.396; joint_6.0 keeps it
        -0.105,  # slot 11: scale(-1.0, joint_13.0) = -0.105; joint_7.0 keeps it
        0.47,  # slot 12: scale(0.0, joint_14.0) = 0.5 * 1.833 - 0.189 = 0.7275 -> joint_8.0 upper 0.47
        1.1547,  # slot 13: scale(0.4, joint_15.0) = 0.7 * 1.881 - 0.162 = 1.1547; joint_9.0 keeps it
        -0.174,  # slot 14: scale(-0.6, joint_4.0) = 0.2 * 0.94 - 0.47 = -0.282 -> joint_10.0 lower -0.174
        1.4294,  # slot 15: scale(0.8, joint_5.0) = 0.9 * 1.806 - 0.196 = 1.4294; joint_11.0 keeps it
    ]
    np.testing.assert_allclose(out[34:44], expected, atol=1e-6)


def test_quirk_catcher_hand_actions_38_to_43_have_no_effect(spec):
    base = ActionMapper(spec).apply(quirk_action(tail=(0.0,) * 6))
    for tail in [(1.0,) * 6, (-1.0,) * 6, (0.9, -0.9, 0.3, -0.3, 0.7, -0.7)]:
        np.testing.assert_array_equal(ActionMapper(spec).apply(quirk_action(tail=tail)), base)


def test_quirk_catcher_hand_follows_this_steps_arm_targets(spec):
    m = ActionMapper(spec)
    m.apply(quirk_action())
    out = m.apply(quirk_action())
    # Second step: prev arm = the clamped [0.001, -0.19, -0.06, 3.141, 2.02, -1.61] + 0.1 * a[22:28]
    #   = [0.051, -0.29, -0.03, 3.241, 2.04, -1.65]
    #   arm clamped: [0.001, -0.29, -0.03, 3.141, 2.04, -1.65]
    #   hand slots 0..5: 0.051; -0.29 -> -0.196; -0.03; 3.241 -> 1.618; 2.04 -> 1.396; -1.65 -> -0.105
    np.testing.assert_allclose(out[22:28], [0.001, -0.29, -0.03, 3.141, 2.04, -1.65], atol=1e-6)
    np.testing.assert_allclose(out[28:34], [0.051, -0.196, -0.03, 1.618, 1.396, -0.105], atol=1e-6)


def test_quirk_applies_to_the_catcher_only(spec):
    # The same hand action on the thrower side maps straight: cur[6:22] = scale(a[6:22], lo[6:22], hi[6:22]).
    m = ActionMapper(spec)
    a = np.zeros(44, np.float32)
    a[6:16] = QUIRK_HAND
    a[16:22] = (0.9, -0.9, 0.3, -0.3, 0.7, -0.7)
    out = m.apply(a)
    expected = [
        0.235,  # slot 0 joint_0.0: 0.75 * 0.94 - 0.47
        0.2555,  # slot 1 joint_1.0: 0.25 * 1.806 - 0.196
        0.9558,  # slot 2 joint_2.0: 0.6 * 1.883 - 0.174
        0.511,  # slot 3 joint_3.0: 0.4 * 1.845 - 0.227
        1.396,  # slot 4 joint_12.0: upper
        -0.105,  # slot 5 joint_13.0: lower
        0.7275,  # slot 6 joint_14.0: 0.5 * 1.833 - 0.189
        1.1547,  # slot 7 joint_15.0: 0.7 * 1.881 - 0.162
        -0.282,  # slot 8 joint_4.0: 0.2 * 0.94 - 0.47
        1.4294,  # slot 9 joint_5.0: 0.9 * 1.806 - 0.196
        1.61485,  # slot 10 joint_6.0: scale(0.9) = 0.95 * 1.883 - 0.174 = 1.78885 - 0.174
        -0.13475,  # slot 11 joint_7.0: scale(-0.9) = 0.05 * 1.845 - 0.227 = 0.09225 - 0.227
        0.141,  # slot 12 joint_8.0: scale(0.3) = 0.65 * 0.94 - 0.47 = 0.611 - 0.47
        0.4361,  # slot 13 joint_9.0: scale(-0.3) = 0.35 * 1.806 - 0.196 = 0.6321 - 0.196
        1.42655,  # slot 14 joint_10.0: scale(0.7) = 0.85 * 1.883 - 0.174 = 1.60055 - 0.174
        0.04975,  # slot 15 joint_11.0: scale(-0.7) = 0.15 * 1.845 - 0.227 = 0.27675 - 0.227
    ]
    np.testing.assert_allclose(out[6:22], expected, atol=1e-6)
    # a zero catcher action leaves the catcher arm at the default, so catcher hand slots 0..5 are
    # the default arm [0, -0.09, -0.09, 3.141, 2.00, -1.57] clamped to hand slots 0..5:
    # 0; -0.09; -0.09; 3.141 -> 1.618; 2.00 -> 1.396; -1.57 -> -0.105
    np.testing.assert_allclose(out[28:34], [0.0, -0.09, -0.09, 1.618, 1.396, -0.105], atol=1e-6)


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
    # Spot checks against robot-cell.md (thrower joint3 range, catcher joint5 range, thumb joint_12.0
    # at hand slot 4 = 44-index 6 + 4 = 10, ring joint_8.0 at hand slot 12 = 44-index 18).
    assert (spec.lower[2], spec.upper[2]) == pytest.approx((-1.0, -0.09))
    assert (spec.lower[26], spec.upper[26]) == pytest.approx((-1.69297, 3.14159265359))
    assert (spec.lower[10], spec.upper[10]) == pytest.approx((0.263, 1.396))
    assert (spec.lower[18], spec.upper[18]) == pytest.approx((-0.47, 0.47))
    assert (spec.lower[32], spec.upper[32]) == pytest.approx((0.263, 1.396))  # catcher: 22 + 10
    np.testing.assert_allclose(spec.thrower_base, [0.0, 0.0, 0.2])
    # joint_13.0's default (1.0139) is now hand slot 5 (44-index 11), joint_5.0's (1.3479) slot 9 (15).
    assert spec.default[11] == pytest.approx(1.0139016439397597)
    assert spec.default[15] == pytest.approx(1.347864170294202)


def test_contract_version_names_the_slot_order_revision():
    assert CONTRACT_VERSION == "dynamic-handover/2"
