"""The noise the original adds (runtime/contract_state.py ``ContractNoise``), checked against a
noise-free :class:`ContractState` run on the same inputs.

- history noise: ``U(-1, 1) * h`` on the catcher's 12 object-history numbers (frame indices 248..259,
  catcher-input offsets 98..109 of each 150-block) of the frame being built, fresh per step; the
  frame goes on the stack with its noise;
- observation noise: on a copy of the 900-number stack, before the clip; off by default;
- action noise: on the raw actions, before the clip;
- the correlated parts are drawn once per ContractState.

Statistics are checked loosely with seeded generators; bounds are worked out in the comments.
"""

import numpy as np
import pytest

from handover.runtime.action import ActionMapper
from handover.runtime.contract_state import ContractNoise, ContractState

GOAL = np.array([0.02, -0.95, 0.5], np.float32)

# Hand slot limits in the simulator's slot order (robot-cell.md; identical for both hands):
# index joint_0.0-3.0, thumb joint_12.0-15.0, middle joint_4.0-7.0, ring joint_8.0-11.0.
HAND_LO = np.array([-0.47, -0.196, -0.174, -0.227, 0.263, -0.105, -0.189, -0.162,
                    -0.47, -0.196, -0.174, -0.227, -0.47, -0.196, -0.174, -0.227])
HAND_HI = np.array([0.47, 1.61, 1.709, 1.618, 1.396, 1.163, 1.644, 1.719,
                    0.47, 1.61, 1.709, 1.618, 0.47, 1.61, 1.709, 1.618])
HAND_HALF = (HAND_HI - HAND_LO) / 2
HAND_MID = (HAND_HI + HAND_LO) / 2

# catcher-input offsets of the 12 history numbers in each of the three stacked 150-blocks
HISTORY_IN_BLOCK = [slice(b + 98, b + 110) for b in (0, 150, 300)]


def joint_q(spec, k):
    """Measured joints of step k: the default pose with a small step-dependent offset (inside the clip)."""
    q = spec.default.astype(np.float64) + 0.01 * np.sin(np.arange(44) + k)
    return q.astype(np.float32)


def object_at(k):
    """A throw-like path that repeats every 10 steps, so long runs stay far inside the [-5, 5] clip."""
    k = k % 10
    return np.array([0.025, -0.38 - 0.04 * k, 0.45 + 0.01 * k], np.float32)


def step(state, spec, k, goal=GOAL):
    """One observation step; returns (history, thrower_input, catcher_input)."""
    hist = state.push_object(object_at(k))
    q = joint_q(spec, k)
    t_in, c_in = state.inputs(q[:22], q[22:], goal, np.array([0.01, -0.9, 0.3], np.float32))
    return hist, t_in, c_in


def implied_hand_action(targets):
    """The thrower hand's action from its absolute targets: a = (t - lo) / half - 1 (scale inverted)."""
    return (np.asarray(targets[6:22], np.float64) - HAND_LO) / HAND_HALF - 1.0


# --------------------------------------------------------------------------- defaults


def test_noise_is_off_by_default(spec):
    n = ContractNoise()
    assert (n.history, n.obs_gaussian, n.obs_correlated, n.action_gaussian, n.action_correlated) == (0, 0, 0, 0, 0)
    default = ContractState(spec)
    explicit = ContractState(spec, ContractNoise(), np.random.default_rng(1))
    mapper = ActionMapper(spec)
    default.reset(), explicit.reset()
    a = np.linspace(-0.9, 0.9, 44).astype(np.float32)
    for k in range(4):
        _, t1, c1 = step(default, spec, k)
        _, t2, c2 = step(explicit, spec, k)
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(default.apply(a), mapper.apply(a))
        np.testing.assert_array_equal(explicit.apply(a), default.mapper.targets)


def test_training_noise_restates_the_contract():
    # contract: observation N(0, 0.002) + correlated 0.001, action N(0, 0.05) + correlated 0.015
    n = ContractNoise.training(0.05)
    assert (n.history, n.obs_gaussian, n.obs_correlated, n.action_gaussian, n.action_correlated) == \
        pytest.approx((0.05, 0.002, 0.001, 0.05, 0.015))


@pytest.mark.parametrize("field", ["history", "obs_gaussian", "obs_correlated", "action_gaussian", "action_correlated"])
@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf")])
def test_bad_noise_amplitude_is_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        ContractNoise(**{field: value})


# --------------------------------------------------------------------------- history noise


def test_history_noise_touches_only_the_catchers_history_numbers(spec):
    clean = ContractState(spec)
    noisy = ContractState(spec, ContractNoise(history=0.05), np.random.default_rng(2))
    clean.reset(), noisy.reset()
    noise_of_step = []
    for k in range(6):
        h_clean, t_clean, c_clean = step(clean, spec, k)
        h_noisy, t_noisy, c_noisy = step(noisy, spec, k)
        # not the goal estimator's input, not the history itself, not the thrower
        np.testing.assert_array_equal(h_noisy, h_clean)
        np.testing.assert_array_equal(noisy.history.entries, clean.history.entries)
        np.testing.assert_array_equal(t_noisy, t_clean)
        diff = c_noisy - c_clean
        touched = np.zeros(450, bool)
        for block in HISTORY_IN_BLOCK[: k + 1]:  # the frames on the stack so far
            touched[block] = True
        assert not diff[~touched].any()
        # (h + n) - h in float32 with |h| < 1: rounding below 1e-7, so the bound is 0.05 + 1e-6
        assert np.abs(diff).max() <= 0.05 + 1e-6
        current = diff[HISTORY_IN_BLOCK[0]]
        assert np.all(current != 0.0)  # all 12 numbers of this frame are noisy
        # the frames on the stack keep the noise they were built with: exactly the earlier steps' noise
        for back, block in enumerate(HISTORY_IN_BLOCK[1: k + 1], start=1):
            np.testing.assert_array_equal(diff[block], noise_of_step[k - back])
        # fresh per step
        for earlier in noise_of_step:
            assert not np.allclose(current, earlier)
        noise_of_step.append(current)
    # and the stack buffer itself holds the noisy frames (248..259 of the current frame)
    np.testing.assert_array_equal(noisy.stack.buffer[248:260] - clean.stack.buffer[248:260], noise_of_step[-1])


def test_history_noise_is_uniform_with_amplitude_h(spec):
    clean = ContractState(spec)
    noisy = ContractState(spec, ContractNoise(history=0.05), np.random.default_rng(3))
    samples = []
    for k in range(300):
        _, _, c_clean = step(clean, spec, k)
        _, _, c_noisy = step(noisy, spec, k)
        samples.append((c_noisy - c_clean)[HISTORY_IN_BLOCK[0]])
    s = np.concatenate(samples)  # 3600 numbers
    # U(-0.05, 0.05): |n| <= 0.05, mean 0 (std of the mean 0.0289 / 60 = 0.0005),
    # std 0.05 / sqrt(3) = 0.0289, the largest of 3600 within 0.05 * (1 - 1/1800) of the bound
    assert np.abs(s).max() <= 0.05 + 1e-6
    assert np.abs(s).max() > 0.049
    assert abs(s.mean()) < 0.002
    assert 0.027 < s.std() < 0.031


def test_history_noise_is_reproducible_with_a_seeded_generator(spec):
    a = ContractState(spec, ContractNoise(history=0.05), np.random.default_rng(4))
    b = ContractState(spec, ContractNoise(history=0.05), np.random.default_rng(4))
    for k in range(3):
        _, _, ca = step(a, spec, k)
        _, _, cb = step(b, spec, k)
        np.testing.assert_array_equal(ca, cb)


# --------------------------------------------------------------------------- observation noise


def test_obs_noise_is_added_to_a_copy_before_the_clip(spec):
    clean = ContractState(spec)
    noisy = ContractState(spec, ContractNoise(obs_gaussian=0.002), np.random.default_rng(5))
    far_goal = np.array([100.0, -0.95, 0.5], np.float32)  # thrower frame [22] = 100 - 0 = 100
    diffs = []
    for k in range(3):
        _, t_clean, c_clean = step(clean, spec, k, far_goal)
        _, t_noisy, c_noisy = step(noisy, spec, k, far_goal)
        # the stack keeps the clean frames
        np.testing.assert_array_equal(noisy.stack.buffer, clean.stack.buffer)
        # the noise went in before the clip: 100 + noise is clipped to exactly 5
        assert t_noisy[22] == 5.0 and t_clean[22] == 5.0
        d = np.concatenate([t_noisy - t_clean, c_noisy - c_clean])
        diffs.append(d)
    d = diffs[-1]
    # every element that is not clipped carries noise; the clipped ones (thrower [22] in each block) none
    clipped = np.zeros(900, bool)
    clipped[[22, 172, 322]] = True
    assert not d[clipped].any()
    assert np.count_nonzero(d[~clipped]) >= 890
    assert 0.0017 < d[~clipped].std() < 0.0023  # N(0, 0.002) over ~900 numbers
    assert not np.allclose(diffs[0], diffs[1], atol=1e-5)  # fresh per step


def test_obs_correlated_noise_is_constant_for_one_state(spec):
    clean = ContractState(spec)
    noisy = ContractState(spec, ContractNoise(obs_correlated=0.001), np.random.default_rng(6))
    other = ContractState(spec, ContractNoise(obs_correlated=0.001), np.random.default_rng(7))
    diffs, other_diffs = [], []
    for k in range(5):
        if k == 3:  # an episode reset does not redraw it
            clean.reset(), noisy.reset(), other.reset()
        _, t_clean, c_clean = step(clean, spec, k)
        _, t_noisy, c_noisy = step(noisy, spec, k)
        _, t_other, c_other = step(other, spec, k)
        diffs.append(np.concatenate([t_noisy - t_clean, c_noisy - c_clean]))
        other_diffs.append(np.concatenate([t_other - t_clean, c_other - c_clean]))
    for d in diffs[1:]:
        np.testing.assert_allclose(d, diffs[0], atol=1e-6)  # float32 rounding of |x| <= 5: < 1e-6
    assert 0.0008 < diffs[0].std() < 0.0012  # N(0, 0.001) over 900 numbers
    assert not np.allclose(diffs[0], other_diffs[0], atol=1e-4)  # another state, another draw


def test_obs_correlated_part_is_the_mean_of_the_noise(spec):
    # Two states from the same seed draw the same correlated vector when they are built; one adds
    # per-step N(0, 0.002) on top. Over 400 steps the per-step part averages to N(0, 0.002 / 20 =
    # 0.0001) per element, so the mean difference to the clean state is the correlated vector
    # (N(0, 0.001) per element) within a few 0.0001.
    clean = ContractState(spec)
    corr_only = ContractState(spec, ContractNoise(obs_correlated=0.001), np.random.default_rng(8))
    both = ContractState(spec, ContractNoise(obs_gaussian=0.002, obs_correlated=0.001), np.random.default_rng(8))
    total = np.zeros(900)
    for k in range(400):
        _, t_clean, c_clean = step(clean, spec, k)
        _, t_corr, c_corr = step(corr_only, spec, k)
        _, t_both, c_both = step(both, spec, k)
        if k == 0:
            corr = np.concatenate([t_corr - t_clean, c_corr - c_clean]).astype(np.float64)
        total += np.concatenate([t_both - t_clean, c_both - c_clean])
    mean = total / 400
    assert np.std(mean - corr) < 0.00015
    assert np.corrcoef(mean, corr)[0, 1] > 0.95


# --------------------------------------------------------------------------- action noise


def test_zero_action_noise_gives_identical_targets(spec):
    plain = ActionMapper(spec)
    zero = ContractState(spec, ContractNoise(action_gaussian=0.0, action_correlated=0.0), np.random.default_rng(9))
    a = np.linspace(-1.2, 1.2, 44).astype(np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(zero.apply(a), plain.apply(a))


def test_action_noise_changes_the_targets_only_through_the_action(spec):
    plain = ActionMapper(spec)
    noisy = ContractState(spec, ContractNoise(action_gaussian=0.05), np.random.default_rng(10))
    # A zero action: the thrower hand goes to the slot midpoints without noise; with noise a = n,
    # target = (n + 1) * half + lo, |n| < 0.3 (6 sigma).
    t_plain = plain.apply(np.zeros(44, np.float32))
    t_noisy = noisy.apply(np.zeros(44, np.float32))
    np.testing.assert_allclose(t_plain[6:22], HAND_MID, atol=1e-6)
    n = implied_hand_action(t_noisy)
    assert np.all(n != 0.0) and np.abs(n).max() < 0.3
    # thrower arm joints 1, 4, 5, 6 keep their previous target whatever the action (noise included)
    np.testing.assert_array_equal(t_noisy[[0, 3, 4, 5]], t_plain[[0, 3, 4, 5]])
    # (joints 2 and 3 sit at a limit in the default pose: -0.09 is joint2's lower and joint3's upper.)
    # The catcher arm moves by 0.1 * n from its default, inside its limits: |0.1 n| < 0.03.
    moved = t_noisy[22:28] - t_plain[22:28]
    assert np.all(moved[[1, 2, 4, 5]] != 0.0) and np.abs(moved).max() < 0.03
    # A saturated action (+-5): 5 + n > 1 always, so after the clip the noise has no effect: noise is
    # added to the action, before the clip, and nowhere else.
    sat = np.where(np.arange(44) % 2 == 0, 5.0, -5.0).astype(np.float32)
    plain.reset(), noisy.reset()
    for _ in range(3):
        np.testing.assert_array_equal(noisy.apply(sat), plain.apply(sat))


def test_action_noise_is_fresh_per_step(spec):
    noisy = ContractState(spec, ContractNoise(action_gaussian=0.05), np.random.default_rng(11))
    first = implied_hand_action(noisy.apply(np.zeros(44, np.float32)))
    second = implied_hand_action(noisy.apply(np.zeros(44, np.float32)))
    assert not np.allclose(first, second, atol=1e-4)


def test_action_correlated_noise_is_constant_for_one_state(spec):
    noisy = ContractState(spec, ContractNoise(action_correlated=0.015), np.random.default_rng(12))
    other = ContractState(spec, ContractNoise(action_correlated=0.015), np.random.default_rng(13))
    zero = np.zeros(44, np.float32)
    first = noisy.apply(zero)
    n = implied_hand_action(first)
    assert np.all(n != 0.0) and np.abs(n).max() < 0.09  # N(0, 0.015): 6 sigma
    for k in range(4):
        if k == 2:
            noisy.reset()  # an episode reset does not redraw it
        out = noisy.apply(zero)
        # hand targets are absolute: the same offset gives the same targets every step
        np.testing.assert_array_equal(out[6:22], first[6:22])
    assert not np.allclose(implied_hand_action(other.apply(zero)), n, atol=1e-4)  # another draw


def test_action_correlated_part_is_the_mean_of_the_noise(spec):
    # Same seed -> same correlated draw at construction. With N(0, 0.05) per step on top, the mean
    # over 400 steps of the implied thrower hand action is the correlated offset within
    # 0.05 / 20 = 0.0025 per slot (std); 16 slots stay within 4 sigma = 0.01.
    corr_only = ContractState(spec, ContractNoise(action_correlated=0.015), np.random.default_rng(14))
    both = ContractState(spec, ContractNoise(action_gaussian=0.05, action_correlated=0.015), np.random.default_rng(14))
    zero = np.zeros(44, np.float32)
    corr = implied_hand_action(corr_only.apply(zero))
    mean = np.mean([implied_hand_action(both.apply(zero)) for _ in range(400)], axis=0)
    assert np.abs(mean - corr).max() < 0.01
    assert np.abs(corr).max() > 0.01  # the offset itself is not negligible against that bound
