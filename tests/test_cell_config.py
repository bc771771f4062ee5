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
    assert cfg.control_rate_hz == 60.0 and cfg.episode_steps == 30
    assert len(cfg.joint_names) == 44 and cfg.joint_names[0] == "thrower/joint1"
    assert cfg.catcher.hand.joints[12] == "catcher/joint_12.0"
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
    raw["goal"] = [0.0, 1.0]
    msg = load_error(tmp_path, raw)
    assert "goal:" in msg and "expected 3 entries, got 2" in msg and "[0.0, 1.0]" in msg


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
