"""The plausibility rules (runtime/plausibility.py) and their bounds in the cell config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, ConfigError, load_cell_config
from handover.runtime.plausibility import (
    OUTSIDE_JOINT_RANGE,
    OUTSIDE_WORKSPACE,
    STAMP_FUTURE,
    STAMP_PAST,
    HardwareRange,
    Implausible,
    PlausibilityConfig,
    PlausibilityError,
    RejectionLog,
    joint_problem,
    object_problem,
    stamp_problem,
)

CFG = load_cell_config()
PL = CFG.plausibility
TOPIC = "/handover/object/position"


def default_raw() -> dict:
    """The default config file as parsed YAML, its bundle path made absolute (as tests/test_cell_config.py)."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    if raw["models"]["bundle"] is not None:
        raw["models"]["bundle"] = str(DEFAULT_CONFIG_PATH.parent / raw["models"]["bundle"])
    return raw


def bounds(**kw) -> PlausibilityConfig:
    base = dict(workspace_lower=(-1.0, -2.0, -0.1), workspace_upper=(1.0, 0.7, 2.0), joint_margin=0.3,
                stamp_future_s=0.5, stamp_past_s=5.0, joint_ranges=PL.joint_ranges)
    return PlausibilityConfig(**{**base, **kw})


# -- the object's workspace ----------------------------------------------------------------------


@pytest.mark.parametrize("xyz", [CFG.object.start_position, CFG.goal.center, (0.0, 0.0, 0.0), (1.0, 0.7, 2.0),
                                 (-1.0, -2.0, -0.1)])
def test_places_in_the_cell_are_plausible(xyz):
    assert object_problem(xyz, bounds(), TOPIC) is None


@pytest.mark.parametrize("xyz, axis", [((1e30, 0.0, 0.5), "x"), ((0.0, 1e30, 0.5), "y"), ((0.0, 0.0, -1e30), "z"),
                                       ((1.0001, 0.0, 0.5), "x"), ((0.0, -2.5, 0.5), "y"), ((0.0, 0.0, 2.01), "z"),
                                       ((5.0, -7.0, 9.0), "x")])
def test_a_point_outside_the_workspace_is_implausible_naming_axis_value_bound_and_topic(xyz, axis):
    found = object_problem(np.array(xyz), bounds(), TOPIC)
    assert found is not None and found.kind == OUTSIDE_WORKSPACE
    assert TOPIC in found.detail and f"object {axis} = " in found.detail and "workspace" in found.detail
    value = dict(zip("xyz", xyz))[axis]
    assert f"{value:.6g}" in found.detail, found.detail


def test_object_problem_refuses_what_is_not_a_point():
    with pytest.raises(ValueError, match="expected a point"):
        object_problem([0.0, 0.0], bounds(), TOPIC)


# -- joints ----------------------------------------------------------------------------------------


def test_joint_ranges_and_margin():
    names = ("a", "b")
    lo, hi = (-1.0, 0.0), (1.0, 2.0)
    assert joint_problem(names, [-1.3, 2.3], lo, hi, 0.3, "/t") is None  # exactly at the margin
    assert joint_problem(names, [0.0, 1.0], lo, hi, 0.0, "/t") is None
    found = joint_problem(names, [0.0, 2.31], lo, hi, 0.3, "/t")
    assert found.kind == OUTSIDE_JOINT_RANGE and "joint b position 2.31 rad" in found.detail and "/t" in found.detail
    assert "[0, 2]" in found.detail
    found = joint_problem(names, [-11.0, 12.0], lo, hi, 0.3, "/t")
    assert "joint a" in found.detail and "2 joints out" in found.detail
    with pytest.raises(ValueError, match="2 names, 3 positions"):
        joint_problem(names, [0.0, 0.0, 0.0], lo, hi, 0.3, "/t")


@pytest.mark.parametrize("side", ["thrower", "catcher"])
def test_every_training_pose_and_the_default_pose_are_plausible_ten_rad_beyond_is_not(side):
    s = getattr(CFG, side)
    names = s.joint_names
    lo, hi = (a + h for a, h in zip(PL.hardware_range(side, "arm"), PL.hardware_range(side, "hand")))
    m = PL.joint_margin
    for q in (s.lower, s.upper, s.default):
        assert joint_problem(names, q, lo, hi, m, "/t") is None, q
    for i in range(len(names)):
        q = np.array(s.default)
        q[i] = hi[i] + 10.0
        found = joint_problem(names, q, lo, hi, m, "/t")
        assert found is not None and names[i] in found.detail


def test_the_configured_hardware_ranges():
    lower, upper = PL.hardware_range("catcher", "arm")
    assert lower == pytest.approx((-2 * math.pi, -2.059, -3.927, -2 * math.pi, -1.69297, -2 * math.pi))
    assert upper == pytest.approx((2 * math.pi, 2.0944, 0.19198, 2 * math.pi, math.pi, 2 * math.pi))
    assert PL.hardware_range("thrower", "arm") == (lower, upper)
    for side in ("thrower", "catcher"):  # the Allegro URDF's ranges = the training limits
        hand = getattr(CFG, side).hand
        assert PL.hardware_range(side, "hand") == (hand.lower, hand.upper)
    assert PL.workspace_lower == (-1.0, -2.0, -0.1) and PL.workspace_upper == (1.0, 0.7, 2.0)
    assert PL.joint_margin == 0.3 and PL.stamp_future_s == 0.5 and PL.stamp_past_s == 5.0


# -- stamps ----------------------------------------------------------------------------------------


def test_stamps():
    b = bounds()
    now = 1_700_000_000.0
    assert stamp_problem(now, now, b, TOPIC) is None
    assert stamp_problem(now + 0.5, now, b, TOPIC) is None and stamp_problem(now - 5.0, now, b, TOPIC) is None
    found = stamp_problem(now + 3600.0, now, b, TOPIC)
    assert found.kind == STAMP_FUTURE and "3600.000 s in the future" in found.detail and TOPIC in found.detail
    assert "stamp_future_s = 0.5 s" in found.detail
    found = stamp_problem(now - 3600.0, now, b, TOPIC)
    assert found.kind == STAMP_PAST and "3600.000 s in the past" in found.detail
    assert stamp_problem(0.0, now, b, TOPIC).kind == STAMP_PAST  # an unset stamp on a wall clock
    assert stamp_problem(now + 3600.0, None, b, TOPIC) is None  # sim time before the first /clock: not judged
    assert stamp_problem(0.0, 0.02, b, TOPIC) is None  # sim time just started


# -- the config section --------------------------------------------------------------------------


@pytest.mark.parametrize("kw, key", [
    (dict(workspace_lower=(1.0, -2.0, -0.1)), "workspace_lower[0]"),
    (dict(workspace_upper=(1.0, 0.7)), "workspace_upper"),
    (dict(workspace_lower=(-1.0, float("nan"), -0.1)), "workspace_lower[1]"),
    (dict(joint_margin=-0.1), "joint_margin"),
    (dict(joint_margin=float("inf")), "joint_margin"),
    (dict(stamp_future_s=0.0), "stamp_future_s"),
    (dict(stamp_past_s=-1.0), "stamp_past_s"),
])
def test_the_config_dataclass_refuses_bad_bounds_naming_the_key(kw, key):
    with pytest.raises(PlausibilityError) as info:
        bounds(**kw)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")


def test_a_hardware_range_must_be_ordered():
    with pytest.raises(PlausibilityError) as info:
        HardwareRange((0.0, 1.0), (1.0, 0.5))
    assert info.value.key == "hardware_lower[1]"
    with pytest.raises(PlausibilityError, match="expected 2 entries"):
        HardwareRange((0.0, 1.0), (1.0,))


def _load_error(tmp_path, raw) -> str:
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_cell_config(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_the_loader_names_file_key_and_value_for_bad_bounds(tmp_path):
    raw = default_raw()
    raw["plausibility"]["workspace_upper"] = [1.0, -3.0, 2.0]
    msg = _load_error(tmp_path, raw)
    assert "plausibility.workspace_lower[1]" in msg and "-3.0" in msg and "(got -2.0)" in msg
    raw = default_raw()
    raw["plausibility"]["stamp_past_s"] = 0
    assert "plausibility.stamp_past_s: must be > 0 (got 0)" in _load_error(tmp_path, raw)
    raw = default_raw()
    raw["plausibility"]["joint_margin"] = -1.0
    assert "plausibility.joint_margin" in _load_error(tmp_path, raw)
    raw = default_raw()
    del raw["plausibility"]["stamp_future_s"]
    assert "plausibility.stamp_future_s: missing key" in _load_error(tmp_path, raw)


def test_the_workspace_must_hold_what_the_cell_places_in_it(tmp_path):
    raw = default_raw()
    raw["plausibility"]["workspace_lower"] = [-1.0, -1.0, -0.1]  # the catcher's base is at y = -1.35
    msg = _load_error(tmp_path, raw)
    assert "catcher.base_position" in msg and "-1.35" in msg
    raw = default_raw()
    raw["plausibility"]["workspace_upper"] = [1.0, 0.7, 0.5]  # the goal is at z = 0.549
    assert "goal.center" in _load_error(tmp_path, raw)


@pytest.mark.parametrize("bound, i, value, words", [
    ("hardware_lower", 1, -0.05, "the hardware range of catcher/joint2 must contain its training range: "
                                 "above catcher.arm.lower[1] = -2.059"),
    ("hardware_upper", 4, 3.14159, "the hardware range of catcher/joint5 must contain its training range: "
                                   "below catcher.arm.upper[4] = 3.14159265359"),
])
def test_a_hardware_range_narrower_than_the_training_range_is_refused(tmp_path, bound, i, value, words):
    raw = default_raw()
    raw["plausibility"]["joint_ranges"]["catcher"]["arm"][bound][i] = value
    msg = _load_error(tmp_path, raw)
    assert f"plausibility.joint_ranges.catcher.arm.{bound}[{i}]: " in msg and words in msg and f"(got {value})" in msg


def test_hardware_ranges_have_the_group_length_and_order(tmp_path):
    raw = default_raw()
    hand = raw["plausibility"]["joint_ranges"]["thrower"]["hand"]
    hand["hardware_lower"], hand["hardware_upper"] = hand["hardware_lower"][:15], hand["hardware_upper"][:15]
    msg = _load_error(tmp_path, raw)
    assert "plausibility.joint_ranges.thrower.hand.hardware_lower: expected 16 entries" in msg and "got 15" in msg
    raw = default_raw()
    raw["plausibility"]["joint_ranges"]["thrower"]["arm"]["hardware_upper"][0] = -7.0
    msg = _load_error(tmp_path, raw)
    assert "plausibility.joint_ranges.thrower.arm.hardware_lower[0]: must be finite and below hardware_upper[0]" in msg
    raw = default_raw()
    del raw["plausibility"]["joint_ranges"]["catcher"]["hand"]
    assert "plausibility.joint_ranges.catcher.hand: missing key" in _load_error(tmp_path, raw)


# -- counting and the throttled log --------------------------------------------------------------


def test_rejection_log_counts_per_topic_and_kind_and_throttles_its_lines():
    log = RejectionLog(log_period_s=5.0)
    far = Implausible(OUTSIDE_WORKSPACE, f"{TOPIC}: object x = 1e+30 m ...")
    assert "ignoring an implausible message (outside_workspace)" in log.add(TOPIC, far, 100.0)
    assert all(log.add(TOPIC, far, 100.0 + 0.01 * k) is None for k in range(1, 100))  # throttled
    other = Implausible(STAMP_FUTURE, "/j: stamp ...")
    assert log.add("/j", other, 100.5) is not None  # another (topic, kind): its own first line
    line = log.add(TOPIC, far, 105.0)
    assert line is not None and "101 on /handover/object/position so far" in line and "100 such since" in line
    assert log.counts == {(TOPIC, OUTSIDE_WORKSPACE): 101, ("/j", STAMP_FUTURE): 1} and log.total() == 102
    values = log.values()
    assert values["implausible_inputs"] == 102
    assert values[f"implausible outside_workspace {TOPIC}"] == 101 and values["implausible stamp_future /j"] == 1
    assert values[f"implausible last {TOPIC}"] == far.detail
    assert RejectionLog().values() == {"implausible_inputs": 0}
