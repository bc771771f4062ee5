"""``handover contract replay``: a logged live run replays to exactly what the policy saw (a run with the
original's history noise: all but the catcher's 12 noisy history numbers per frame, which are not logged)."""

import numpy as np
import pytest
import yaml

from handover.cli import main
from handover.runtime.cell_config import DEFAULT_CONFIG_PATH
from handover.runtime.contract_state import ContractNoise
from handover.runtime.errors import InputError
from handover.runtime.policy_networks import PolicyNetworks
from handover.runtime.policy_step import PolicyStep
from handover.runtime.replay import check_log, replay


def live_log(spec, bundle_dir, steps=12, seed=0, noise=ContractNoise(), noise_seed=0):
    """Run the live policy step from start-up (with ``noise``) and log what an operator would record."""
    step = PolicyStep(spec, PolicyNetworks.load(bundle_dir), noise, np.random.default_rng(noise_seed))
    rng = np.random.default_rng(seed)
    goal = np.array([0.02, -0.95, 0.5], np.float32)
    log = {k: [] for k in ("thrower_q", "catcher_q", "object_pos", "actions", "predicted_goal")}
    seen = {k: [] for k in ("thrower_input", "catcher_input", "targets")}
    for k in range(steps):
        q = (spec.default + rng.normal(0, 0.02, 44)).astype(np.float32)
        obj = np.array([0.025, -0.38 - 0.04 * k, 0.45 + 0.01 * k], np.float32)
        res = step.step(q[:22], q[22:], obj, goal)
        for name, value in (("thrower_q", q[:22]), ("catcher_q", q[22:]), ("object_pos", obj),
                            ("actions", res.action), ("predicted_goal", res.predicted_goal_world)):
            log[name].append(value)
        for name in seen:
            seen[name].append(getattr(res, name))
    arrays = {k: np.array(v, np.float32) for k, v in log.items()}
    arrays["goal_pos"] = goal
    return arrays, {k: np.array(v) for k, v in seen.items()}


def test_replay_reproduces_the_live_step_with_logged_goal(spec, bundle_dir):
    arrays, seen = live_log(spec, bundle_dir)
    out = replay(spec, arrays)
    for name in seen:
        np.testing.assert_allclose(out[name], seen[name], atol=1e-5, err_msg=name)
    assert out["object_history"].shape == (12, 60)
    # step 0: history holds only the first object position, relative to the thrower base
    assert not out["object_history"][0, :57].any()
    np.testing.assert_allclose(out["object_history"][0, 57:], arrays["object_pos"][0] - [0, 0, 0.2], atol=1e-6)


def test_replay_computes_the_goal_with_the_bundle_estimator(spec, bundle_dir):
    arrays, seen = live_log(spec, bundle_dir, seed=1)
    logged_goal = arrays.pop("predicted_goal")
    out = replay(spec, arrays, PolicyNetworks.load(bundle_dir).goal_estimator)
    np.testing.assert_allclose(out["predicted_goal"], logged_goal, atol=1e-5)
    np.testing.assert_allclose(out["catcher_input"], seen["catcher_input"], atol=1e-5)


def test_step_0_starts_from_empty_stack_and_default_targets(spec, bundle_dir):
    arrays, _ = live_log(spec, bundle_dir, steps=1)
    arrays["actions"][:] = 0.0
    out = replay(spec, arrays)
    assert not out["thrower_input"][0, 150:].any() and not out["catcher_input"][0, 150:].any()
    # zero action: thrower arm keeps the default, hand goes to mid-range
    np.testing.assert_allclose(out["targets"][0, :6], [0.0, -0.09, -0.09, 3.141, 2.0, -1.57], atol=1e-6)
    assert out["targets"][0, 6] == pytest.approx(0.0, abs=1e-6)  # joint_0.0 mid of [-0.47, 0.47]
    assert out["targets"][0, 10] == pytest.approx(0.8295, abs=1e-6)  # slot 4, thumb joint_12.0: mid of [0.263, 1.396]
    # catcher: arm keeps the default; catcher-hand quirk (cur[28:44] = cur[22:38], then the clamp):
    # slots 0..5 = default arm clamped to hand slots 0..5: 0; -0.09; -0.09; 3.141 -> 1.618 (joint_3.0);
    # 2.00 -> 1.396 (joint_12.0); -1.57 -> -0.105 (joint_13.0);
    # slots 6..15 = midpoints of hand slots 0..9, clamped to slots 6..15:
    #   joint_0.0 0 | joint_1.0 (1.61 - 0.196) / 2 = 0.707 | joint_2.0 (1.709 - 0.174) / 2 = 0.7675 -> 0.47
    #   (joint_4.0) | joint_3.0 (1.618 - 0.227) / 2 = 0.6955 | joint_12.0 0.8295 | joint_13.0 (1.163 - 0.105)
    #   / 2 = 0.529 | joint_14.0 (1.644 - 0.189) / 2 = 0.7275 -> 0.47 (joint_8.0) | joint_15.0 (1.719 -
    #   0.162) / 2 = 0.7785 | joint_4.0 0 | joint_5.0 0.707
    np.testing.assert_allclose(out["targets"][0, 22:28], [0.0, -0.09, -0.09, 3.141, 2.0, -1.57], atol=1e-6)
    np.testing.assert_allclose(
        out["targets"][0, 28:44],
        [0.0, -0.09, -0.09, 1.618, 1.396, -0.105,
         0.0, 0.707, 0.47, 0.6955, 0.8295, 0.529, 0.47, 0.7785, 0.0, 0.707],
        atol=1e-6,
    )


def test_replay_of_a_run_with_history_noise_differs_only_in_the_noisy_numbers(spec, bundle_dir):
    """The replay tool rebuilds the noise-free observation: a live run with the original's history
    noise (U(-1, 1) * 0.05 on the catcher's 12 history numbers, not logged) replays to the same
    thrower inputs and targets; the catcher inputs differ only at the 12 history numbers of each of
    the three stacked frames (catcher-part offsets 98..109 in blocks 0, 150, 300), by at most 0.05."""
    arrays, seen = live_log(spec, bundle_dir, steps=6, seed=6, noise=ContractNoise(history=0.05), noise_seed=5)
    out = replay(spec, arrays)
    np.testing.assert_allclose(out["thrower_input"], np.array(seen["thrower_input"]), atol=1e-5)
    np.testing.assert_allclose(out["targets"], np.array(seen["targets"]), atol=1e-5)
    noisy = np.zeros(450, bool)
    for block in (0, 150, 300):
        noisy[block + 98:block + 110] = True
    diff = np.array(seen["catcher_input"]) - out["catcher_input"]
    np.testing.assert_allclose(diff[:, ~noisy], 0.0, atol=1e-5)
    assert np.abs(diff[:, noisy]).max() <= 0.05 + 1e-6
    assert np.abs(diff[:, 98:110]).min() > 0.0  # every step's current frame carries its own noise


def test_cli_replay_writes_out(spec, bundle_dir, tmp_path, capsys):
    arrays, seen = live_log(spec, bundle_dir, steps=5)
    arrays.pop("predicted_goal")
    np.savez(tmp_path / "in.npz", **arrays)
    assert main(["contract", "replay", str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), "--bundle", str(bundle_dir)]) == 0
    with np.load(tmp_path / "out.npz") as f:
        assert {"thrower_input", "catcher_input", "object_history", "targets"} <= set(f.files)
        assert f["thrower_input"].shape == (5, 450) and f["targets"].shape == (5, 44)
        np.testing.assert_allclose(f["targets"], seen["targets"], atol=1e-5)
    assert "replayed 5 steps" in capsys.readouterr().out


def test_cli_replay_without_goal_or_bundle_is_a_clear_error(spec, bundle_dir, tmp_path, capsys):
    arrays, _ = live_log(spec, bundle_dir, steps=2)
    arrays.pop("predicted_goal")
    np.savez(tmp_path / "in.npz", **arrays)
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["models"]["bundle"] = None  # a cell config without a bundle
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump(raw))
    argv = ["contract", "replay", str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), "--config", str(tmp_path / "cell.yaml")]
    assert main(argv) == 2
    assert "no 'predicted_goal' array; pass --bundle" in capsys.readouterr().err


def test_cli_replay_falls_back_to_the_configured_bundle(spec, bundle_dir, tmp_path):
    arrays, _ = live_log(spec, bundle_dir, steps=2)
    arrays.pop("predicted_goal")
    np.savez(tmp_path / "in.npz", **arrays)
    assert main(["contract", "replay", str(tmp_path / "in.npz"), str(tmp_path / "out.npz")]) == 0  # the reference bundle
    with np.load(tmp_path / "out.npz") as out:
        assert out["predicted_goal"].shape == (2, 3) and np.isfinite(out["predicted_goal"]).all()


def good_log(steps=4):
    return {
        "thrower_q": np.zeros((steps, 22)),
        "catcher_q": np.zeros((steps, 22)),
        "object_pos": np.zeros((steps, 3)),
        "goal_pos": np.zeros(3),
        "actions": np.zeros((steps, 44)),
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.pop("catcher_q"), "array 'catcher_q' missing"),
        (lambda a: a.update(actions=np.zeros((4, 43))), "array 'actions' has shape (4, 43), expected (4, 44)"),
        (lambda a: a.update(object_pos=np.zeros((5, 3))), "array 'object_pos' has shape (5, 3), expected (4, 3)"),
        (lambda a: a.update(goal_pos=np.zeros((1, 3))), "array 'goal_pos' has shape (1, 3), expected (3,)"),
        (lambda a: a["thrower_q"].__setitem__((2, 7), np.nan), "array 'thrower_q' has a non-finite value at index [2, 7]"),
        (lambda a: a.update(predicted_goal=np.zeros((4, 2))), "array 'predicted_goal' has shape (4, 2)"),
        (lambda a: a.update(actions=np.array([["x"] * 44] * 4)), "array 'actions' has dtype"),
    ],
)
def test_bad_log_names_the_array(edit, message):
    arrays = good_log()
    edit(arrays)
    with pytest.raises(InputError) as info:
        check_log(arrays, source="in.npz")
    assert message in str(info.value) and "in.npz" in str(info.value)


def test_cli_reports_bad_log_file(tmp_path, capsys):
    arrays = good_log()
    arrays["catcher_q"] = np.zeros((4, 21))
    np.savez(tmp_path / "bad.npz", **arrays)
    assert main(["contract", "replay", str(tmp_path / "bad.npz"), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "'catcher_q'" in err
    assert not (tmp_path / "o.npz").exists()
    assert main(["contract", "replay", str(tmp_path / "missing.npz"), str(tmp_path / "o.npz")]) == 2
    assert "missing.npz: replay log not found" in capsys.readouterr().err
