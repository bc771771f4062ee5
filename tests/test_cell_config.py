"""The cell config loads into immutable dataclasses; every bad value names file, key path and value."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from handover.runtime.cell_config import (
    DEFAULT_CONFIG_PATH,
    CellConfig,
    ConfigError,
    load_cell_config,
)


def default_raw() -> dict:
    """The default config, with its bundle path made absolute so a copy elsewhere still finds it."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    if raw["models"]["bundle"] is not None:
        raw["models"]["bundle"] = str(DEFAULT_CONFIG_PATH.parent / raw["models"]["bundle"])
    return raw


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def load_error(tmp_path: Path, raw: dict) -> str:
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_cell_config(path)
    msg = str(info.value)
    assert str(path) in msg  # every error names the file
    return msg


def test_default_config_loads_typed_and_frozen():
    cfg = load_cell_config()
    assert isinstance(cfg, CellConfig)
    assert cfg.source == DEFAULT_CONFIG_PATH
    assert cfg.control_rate_hz == 20.0 and cfg.episode_steps == 30
    assert cfg.control_period_s == pytest.approx(0.05)
    assert len(cfg.joint_names) == 44 and cfg.joint_names[0] == "thrower/joint1"
    # hand slot 4 is the thumb's joint_12.0, slot 12 the ring's joint_8.0 (simulator DOF order)
    assert cfg.catcher.hand.joints[4] == "catcher/joint_12.0"
    assert cfg.catcher.hand.joints[12] == "catcher/joint_8.0"
    assert cfg.joint_names[6 + 4] == "thrower/joint_12.0" and cfg.joint_names[22 + 6 + 4] == "catcher/joint_12.0"
    assert cfg.thrower.base_position == (0.0, 0.0, 0.2)
    assert cfg.catcher.base_yaw == pytest.approx(1.57079)
    assert isinstance(cfg.thrower.arm.lower, tuple) and isinstance(cfg.thrower.arm.lower[0], float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.control_rate_hz = 30.0  # type: ignore[misc]


def test_wrong_length(tmp_path):
    raw = default_raw()
    raw["thrower"]["arm"]["lower"] = raw["thrower"]["arm"]["lower"][:5]
    msg = load_error(tmp_path, raw)
    assert "thrower.arm.lower" in msg and "expected 6 entries, got 5" in msg


def test_wrong_length_of_a_fixed_vector(tmp_path):
    raw = default_raw()
    raw["goal"]["center"] = [0.0, 1.0]
    msg = load_error(tmp_path, raw)
    assert "goal.center:" in msg and "expected 3 entries, got 2" in msg and "[0.0, 1.0]" in msg


def test_goal_is_drawn_per_episode_in_its_box(tmp_path):
    import numpy as np

    cfg = load_cell_config()
    # the original's goal: object start (0.025, -0.38, 0.449) + (U(-0.05, 0.05), -0.55 + U(-0.05, 0.05), 0.10)
    assert cfg.goal.center == (0.025, -0.93, 0.549) and cfg.goal.half_range == (0.05, 0.05, 0.0)
    goals = np.array([cfg.goal.draw(np.random.default_rng(k)) for k in range(200)])
    assert np.all(np.abs(goals - cfg.goal.center) <= np.array(cfg.goal.half_range) + 1e-12)
    assert goals[:, 0].std() > 0.02 and np.all(goals[:, 2] == 0.549)  # U(-0.05, 0.05): std 0.029
    raw = default_raw()
    raw["goal"]["half_range"][1] = -0.01
    assert "goal.half_range[1]" in load_error(tmp_path, raw)


def test_wrong_type(tmp_path):
    raw = default_raw()
    raw["catcher"]["hand"]["upper"][3] = "high"
    msg = load_error(tmp_path, raw)
    assert "catcher.hand.upper[3]" in msg and "expected a number" in msg and "'high'" in msg


def test_bool_is_not_a_number(tmp_path):
    raw = default_raw()
    raw["episode_steps"] = True
    msg = load_error(tmp_path, raw)
    assert "episode_steps" in msg and "expected an integer" in msg


def test_lower_above_upper(tmp_path):
    raw = default_raw()
    raw["thrower"]["arm"]["lower"][1] = 0.5  # upper is 0.41
    msg = load_error(tmp_path, raw)
    assert "thrower.arm.lower[1]" in msg and "thrower.arm.upper[1] = 0.41" in msg and "0.5" in msg


def test_unknown_key(tmp_path):
    raw = default_raw()
    raw["thrower"]["arm"]["stiffness"] = [1, 2, 3, 4, 5, 6]
    msg = load_error(tmp_path, raw)
    assert "thrower.arm.stiffness" in msg and "unknown key" in msg


def test_missing_key(tmp_path):
    raw = default_raw()
    del raw["catcher"]["base_yaw"]
    msg = load_error(tmp_path, raw)
    assert "catcher.base_yaw" in msg and "missing key" in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_cell_config(tmp_path / "nope.yaml")


def test_missing_model_path(tmp_path):
    raw = default_raw()
    raw["models"]["bundle"] = "policies/missing"
    msg = load_error(tmp_path, raw)
    assert "models.bundle" in msg and "does not exist" in msg and "policies/missing" in msg


def test_model_path_relative_to_config_file(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")  # a bundle folder is one with a manifest
    raw = default_raw()
    raw["models"]["bundle"] = "bundle"
    cfg = load_cell_config(write(tmp_path, raw))
    assert cfg.models.bundle == (tmp_path / "bundle").resolve()


def test_not_yaml(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("thrower: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cell_config(path)


def test_duplicate_joint_name(tmp_path):
    raw = default_raw()
    raw["catcher"]["arm"]["joints"][0] = "thrower/joint1"
    msg = load_error(tmp_path, raw)
    assert "catcher.arm.joints[0]" in msg and "thrower.arm.joints[0]" in msg


def test_topic_template_needs_placeholders(tmp_path):
    raw = default_raw()
    raw["topics"]["joint_states"] = "/handover/{side}/joint_states"
    msg = load_error(tmp_path, raw)
    assert "topics.joint_states" in msg and "{group}" in msg


def test_invalid_topic_name(tmp_path):
    raw = default_raw()
    raw["topics"]["estop"] = "handover estop"
    msg = load_error(tmp_path, raw)
    assert "topics.estop" in msg and "'handover estop'" in msg


def test_nonpositive_rate(tmp_path):
    raw = default_raw()
    raw["control_rate_hz"] = 0
    msg = load_error(tmp_path, raw)
    assert "control_rate_hz" in msg and "must be > 0" in msg


def test_section_not_a_mapping(tmp_path):
    raw = default_raw()
    raw["thrower"] = [1, 2]
    msg = load_error(tmp_path, raw)
    assert "thrower" in msg and "expected a mapping" in msg


def test_config_check_command_reports_bad_file(tmp_path, capsys):
    from handover.cli import main

    raw = default_raw()
    raw["catcher"]["arm"]["upper"][0] = -1.0
    path = write(tmp_path, raw)
    assert main(["config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "catcher.arm.lower[0]" in err and str(path) in err
    assert main(["config"]) == 0


# --------------------------------------------------------------------------- slot order and limits
# Transcribed by hand from robot-cell.md (name -> (lower, upper)); the catcher's rows that differ
# change origins/axes only: its joint_0.0, joint_8.0, joint_12.0, joint_13.0 limits are the thrower's.
HAND_LIMITS = {
    "joint_0.0": (-0.47, 0.47), "joint_1.0": (-0.196, 1.61), "joint_2.0": (-0.174, 1.709), "joint_3.0": (-0.227, 1.618),
    "joint_4.0": (-0.47, 0.47), "joint_5.0": (-0.196, 1.61), "joint_6.0": (-0.174, 1.709), "joint_7.0": (-0.227, 1.618),
    "joint_8.0": (-0.47, 0.47), "joint_9.0": (-0.196, 1.61), "joint_10.0": (-0.174, 1.709), "joint_11.0": (-0.227, 1.618),
    "joint_12.0": (0.263, 1.396), "joint_13.0": (-0.105, 1.163), "joint_14.0": (-0.189, 1.644), "joint_15.0": (-0.162, 1.719),
}
ARM_LIMITS = {
    "thrower": [(-0.000, 0.001), (-0.09, 0.41), (-1.0, -0.09), (3.140, 3.141), (2.00, 2.001), (-1.571, -1.570)],
    "catcher": [(-0.0, 0.001), (-2.059, 2.0944), (-3.927, 0.19198), (3.140, 3.141), (-1.69297, 3.14159265359), (-1.97, -1.17)],
}
# The training simulator's DOF order: index, thumb, middle, ring (dynamic-handover-contract.md).
SLOT_ORDER = ["joint_0.0", "joint_1.0", "joint_2.0", "joint_3.0",
              "joint_12.0", "joint_13.0", "joint_14.0", "joint_15.0",
              "joint_4.0", "joint_5.0", "joint_6.0", "joint_7.0",
              "joint_8.0", "joint_9.0", "joint_10.0", "joint_11.0"]


@pytest.mark.parametrize("side", ["thrower", "catcher"])
def test_hand_joints_are_in_the_simulators_slot_order_with_robot_cell_limits(side):
    hand = getattr(load_cell_config(), side).hand
    assert list(hand.joints) == [f"{side}/{name}" for name in SLOT_ORDER]
    for slot, name in enumerate(SLOT_ORDER):
        assert (hand.lower[slot], hand.upper[slot]) == pytest.approx(HAND_LIMITS[name]), f"slot {slot} {name}"
    assert hand.velocity_limit == pytest.approx((3.0,) * 16)


@pytest.mark.parametrize("side", ["thrower", "catcher"])
def test_arm_joints_and_limits_restate_robot_cell(side):
    arm = getattr(load_cell_config(), side).arm
    assert list(arm.joints) == [f"{side}/joint{i}" for i in range(1, 7)]
    for i, (lo, hi) in enumerate(ARM_LIMITS[side]):
        assert (arm.lower[i], arm.upper[i]) == pytest.approx((lo, hi)), f"joint{i + 1}"
    assert arm.velocity_limit == pytest.approx((3.14,) * 6)
    assert arm.default == pytest.approx((0.0, -0.09, -0.09, 3.141, 2.00, -1.57))


@pytest.mark.parametrize("side", ["thrower", "catcher"])
def test_default_pose_violates_the_limits_at_exactly_hand_slot_13(side):
    # Slot by slot (hand default vs HAND_LIMITS in slot order):
    #  0 -0.0399 in [-0.47, 0.47]    1 1.3495 in [-0.196, 1.61]   2 0.8660 in [-0.174, 1.709]   3 0.7804 in [-0.227, 1.618]
    #  4  0.9656 in [0.263, 1.396]   5 1.0139 in [-0.105, 1.163]  6 0.8502 in [-0.189, 1.644]   7 1.3265 in [-0.162, 1.719]
    #  8 -0.2048 in [-0.47, 0.47]    9 1.3479 in [-0.196, 1.61]  10 0.6031 in [-0.174, 1.709]  11 0.9181 in [-0.227, 1.618]
    # 12 -0.2134 in [-0.47, 0.47]   13 1.7199 > 1.61 (joint_9.0) 14 1.2687 in [-0.174, 1.709]  15 0.8245 in [-0.227, 1.618]
    # (In Allegro order it would be 3 slots: joint_4.0 0.966 > 0.47, joint_12.0 -0.213 < 0.263, joint_13.0 1.720 > 1.163.)
    cfg = getattr(load_cell_config(), side)
    outside = [i for i, (lo, hi, q) in enumerate(zip(cfg.lower, cfg.upper, cfg.default)) if not lo <= q <= hi]
    assert outside == [6 + 13]  # no arm joint, one hand slot
    assert cfg.hand.joints[13] == f"{side}/joint_9.0"
    assert cfg.hand.default[13] == pytest.approx(1.7199185039090872)


def test_new_top_level_and_twin_values():
    cfg = load_cell_config()
    assert cfg.history_noise == pytest.approx(0.05)
    assert cfg.gate.stale_periods == pytest.approx(3.0)
    assert cfg.twin.timestep_s == pytest.approx(1 / 120)  # 6 physics steps per 50 ms control step
    assert cfg.twin.arm_damping == pytest.approx((1.0,) * 6)
    assert cfg.twin.arm_friction == pytest.approx((1.0,) * 6)
    assert cfg.velocity_limit == pytest.approx(((3.14,) * 6 + (3.0,) * 16) * 2)


def test_velocity_limit_must_be_positive(tmp_path):
    raw = default_raw()
    raw["catcher"]["hand"]["velocity_limit"][5] = 0.0
    msg = load_error(tmp_path, raw)
    assert "catcher.hand.velocity_limit[5]" in msg and "must be > 0" in msg


def test_velocity_limit_wrong_length(tmp_path):
    raw = default_raw()
    raw["thrower"]["arm"]["velocity_limit"] = [3.14] * 5
    msg = load_error(tmp_path, raw)
    assert "thrower.arm.velocity_limit" in msg and "expected 6 entries, got 5" in msg


def test_negative_history_noise(tmp_path):
    raw = default_raw()
    raw["history_noise"] = -0.01
    msg = load_error(tmp_path, raw)
    assert "history_noise" in msg and "-0.01" in msg


def test_nonpositive_gate_stale_periods(tmp_path):
    raw = default_raw()
    raw["gate"]["stale_periods"] = 0
    msg = load_error(tmp_path, raw)
    assert "gate.stale_periods" in msg and "must be > 0" in msg


def test_negative_arm_friction_but_zero_is_fine(tmp_path):
    raw = default_raw()
    raw["twin"]["arm_friction"][2] = 0.0
    load_cell_config(write(tmp_path, raw))
    raw["twin"]["arm_friction"][2] = -1.0
    msg = load_error(tmp_path, raw)
    assert "twin.arm_friction[2]" in msg and "must be >= 0" in msg


def test_twin_timestep_must_divide_the_control_period(tmp_path):
    raw = default_raw()
    raw["twin"]["timestep_s"] = 0.007  # 0.05 / 0.007 = 7.14..., not whole
    msg = load_error(tmp_path, raw)
    assert "twin.timestep_s" in msg and "must divide the control period" in msg


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("control_rate_hz: 20\ncontrol_rate_hz: 60\n")
    with pytest.raises(ConfigError, match=r"'control_rate_hz' given twice \(lines 1 and 2\)"):
        load_cell_config(path)


def test_the_bundle_must_be_a_bundle_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for bundle, problem in (("file", "is a file"), ("empty", "no manifest.json")):
        raw = default_raw()
        raw["models"]["bundle"] = bundle
        with pytest.raises(ConfigError, match=f"models.bundle: .*{problem}"):
            load_cell_config(write(tmp_path, raw))
