"""The success rule on real twin states reached by simulation. Units: m, rad, s."""

from __future__ import annotations

import numpy as np
import pytest

from handover.runtime.cell_config import load_cell_config
from handover.sim_twin.success import MAX_PALM_DISTANCE_M, MIN_HEIGHT_M, judge
from handover.sim_twin.twin import Twin

CFG = load_cell_config()
CATCHER_HAND = np.arange(28, 44)  # contract indices of the catcher's Allegro joints
ABDUCTION = [0, 4, 8, 12]  # Allegro joints 0, 4, 8, 12 spread the fingers / rotate the thumb; the others flex


@pytest.fixture(scope="module")
def twin() -> Twin:
    return Twin(CFG)


def catcher_palm(twin: Twin) -> tuple[np.ndarray, np.ndarray]:
    """Catcher palm centre (world, m) and palm normal (world unit vector: the palm frame's +x,
    pointing out of the palm towards the fingers' grasp side)."""
    d, m = twin.data, twin.model
    normal = d.xmat[m.body("catcher/base_link").id].reshape(3, 3)[:, 0]
    return d.site("catcher/palm_center").xpos.copy(), normal.copy()


def curled_catcher_targets(fraction: float) -> np.ndarray:
    """Catcher hand targets (rad): flexion joints moved ``fraction`` of the way from the default
    pose to their upper limits, abduction joints at the default."""
    lo, hi = np.array(CFG.catcher.hand.lower), np.array(CFG.catcher.hand.upper)
    q = np.clip(np.array(CFG.catcher.hand.default), lo, hi)
    flex = np.ones(16, bool)
    flex[ABDUCTION] = False
    q[flex] += fraction * (hi[flex] - q[flex])
    return q


def test_object_still_in_the_throwers_hand_is_no_success(twin):
    twin.reset()
    twin.step(10)  # hold the reset pose; the object settles in the thrower's palm
    out = judge(twin)
    assert not out.success
    assert out.touches_thrower and not out.touches_catcher_fingers
    assert "thrower" in out.reason
    assert out.distance_to_catcher_palm > 0.5


def test_dropped_object_is_no_success(twin):
    twin.reset()
    palm, _ = catcher_palm(twin)
    twin.set_object_state(np.array([palm[0], palm[1] + 0.1, 0.1]), np.zeros(3))  # below the catcher's hand
    twin.step(30)  # falls and comes to rest on the floor
    out = judge(twin)
    assert not out.success
    assert out.object_position[2] < MIN_HEIGHT_M
    assert out.reason.startswith("dropped") and "floor" in out.reason
    assert not out.touches_catcher_fingers and not out.touches_thrower


def test_object_gripped_in_the_catchers_hand_is_success(twin):
    twin.reset()
    palm, normal = catcher_palm(twin)
    twin.set_object_state(palm + 0.045 * normal, np.zeros(3))  # just in front of the palm, inside the curled fingers
    twin.set_targets(CATCHER_HAND, curled_catcher_targets(0.5))
    twin.step(60)  # 1 s: the fingers close and the object comes to rest in the grasp
    assert np.linalg.norm(twin.object_velocity()) < 0.02  # really at rest, not falling through
    out = judge(twin)
    assert out.success, out.reason
    assert out.reason == "held by the catcher"
    assert out.touches_catcher_fingers and not out.touches_thrower
    assert out.distance_to_catcher_palm < MAX_PALM_DISTANCE_M
    assert out.object_position[2] > 0.3


def test_object_floating_near_the_palm_without_finger_contact_is_no_success(twin):
    twin.reset()
    palm, _ = catcher_palm(twin)
    twin.set_object_state(palm + np.array([0.0, 0.0, 0.08]), np.zeros(3))  # 8 cm above the palm centre, in the air
    out = judge(twin)
    assert not out.success
    assert out.distance_to_catcher_palm < MAX_PALM_DISTANCE_M
    assert not out.touches_catcher_fingers and not out.touches_thrower
    assert "does not touch the fingers" in out.reason


def test_the_opened_hand_lets_the_object_go(twin):
    """The same placement as the successful grasp, but the catcher's fingers open fully: the object
    falls out of the hand, so finger contact, not the placement, made the success."""
    twin.reset()
    palm, normal = catcher_palm(twin)
    twin.set_object_state(palm + 0.045 * normal, np.zeros(3))
    twin.set_targets(CATCHER_HAND, np.array(CFG.catcher.hand.lower))
    twin.step(60)
    out = judge(twin)
    assert not out.success
    assert not out.touches_catcher_fingers


def test_judging_does_not_change_the_twin(twin):
    twin.reset()
    twin.step(3)
    d = twin.data
    before = (d.qpos.copy(), d.qvel.copy(), d.ctrl.copy(), d.ncon, d.time)
    judge(twin)
    assert np.array_equal(d.qpos, before[0]) and np.array_equal(d.qvel, before[1]) and np.array_equal(d.ctrl, before[2])
    assert (d.ncon, d.time) == before[3:]
