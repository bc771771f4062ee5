"""The cell's kinematic description as numbers, restated from ``shared/reference/robot-cell.md``
(the URDFs the Dynamic Handover policies were trained with). Lengths m, angles rad, masses kg.

Each row: ``Link(joint, parent, child, xyz, rpy, axis)``; ``axis`` is None for a fixed joint.
Joint limits are not here: they come from the cell config (``launch/cell.yaml``), which the
runtime uses too, so there is one source for them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class Link:
    joint: str
    parent: str
    child: str
    xyz: Vec
    rpy: Vec
    axis: Optional[Vec]  # None: fixed joint


_THROWER = (
    Link("joint1", "link_base", "link1", (0, 0, 0.267), (0, 0, 0), (0, 0, 1)),
    Link("joint2", "link1", "link2", (0, 0, 0), (-1.5708, 0, 0), (0, 0, 1)),
    Link("joint3", "link2", "link3", (0.0535, -0.2845, 0), (0, 0, 0), (0, 0, 1)),
    Link("joint4", "link3", "link4", (0.0775, 0.3425, 0), (-1.5708, 0, 0), (0, 0, 1)),
    Link("joint5", "link4", "link5", (0, 0, 0), (1.5708, 0, 0), (0, 0, 1)),
    Link("joint6", "link5", "link6", (0.076, 0.097, 0), (-1.5708, 0, 0), (0, 0, 1)),
    Link("gripper_base_joint", "link6", "base_link", (0, 0.045, 0.045), (0, -1.57, -1.57), None),
    Link("joint_0.0", "base_link", "link_0.0", (0, -0.0435, -0.001542), (0.08726646255, 0, 0), (0, 0, 1)),
    Link("joint_1.0", "link_0.0", "link_1.0", (0, 0, 0.0164), (0, 0, 0), (0, 1, 0)),
    Link("joint_2.0", "link_1.0", "link_2.0", (0, 0, 0.054), (0, 0, 0), (0, 1, 0)),
    Link("joint_3.0", "link_2.0", "link_3.0", (0, 0, 0.0384), (0, 0, 0), (0, 1, 0)),
    Link("joint_3.0_tip", "link_3.0", "link_3.0_tip", (0, 0, 0.060), (0, 0, 0), None),
    Link("joint_4.0", "base_link", "link_4.0", (0, 0, 0.0007), (0, 0, 0), (0, 0, 1)),
    Link("joint_5.0", "link_4.0", "link_5.0", (0, 0, 0.0164), (0, 0, 0), (0, 1, 0)),
    Link("joint_6.0", "link_5.0", "link_6.0", (0, 0, 0.054), (0, 0, 0), (0, 1, 0)),
    Link("joint_7.0", "link_6.0", "link_7.0", (0, 0, 0.0384), (0, 0, 0), (0, 1, 0)),
    Link("joint_7.0_tip", "link_7.0", "link_7.0_tip", (0, 0, 0.060), (0, 0, 0), None),
    Link("joint_8.0", "base_link", "link_8.0", (0, 0.0435, -0.001542), (-0.08726646255, 0, 0), (0, 0, 1)),
    Link("joint_9.0", "link_8.0", "link_9.0", (0, 0, 0.0164), (0, 0, 0), (0, 1, 0)),
    Link("joint_10.0", "link_9.0", "link_10.0", (0, 0, 0.054), (0, 0, 0), (0, 1, 0)),
    Link("joint_11.0", "link_10.0", "link_11.0", (0, 0, 0.0384), (0, 0, 0), (0, 1, 0)),
    Link("joint_11.0_tip", "link_11.0", "link_11.0_tip", (0, 0, 0.060), (0, 0, 0), None),
    Link("joint_12.0", "base_link", "link_12.0", (-0.0182, -0.019333, -0.045987), (0, -1.65806278845, 1.5707963259), (1, 0, 0)),
    Link("joint_13.0", "link_12.0", "link_13.0", (-0.027, -0.005, 0.0399), (0, 0, 0), (0, 0, -1)),
    Link("joint_14.0", "link_13.0", "link_14.0", (0, 0, 0.0177), (0, 0, 0), (0, 1, 0)),
    Link("joint_15.0", "link_14.0", "link_15.0", (0, 0, 0.0514), (0, 0, 0), (0, 1, 0)),
    Link("joint_15.0_tip", "link_15.0", "link_15.0_tip", (0, 0, 0.075), (0, 0, 0), None),
    Link("palm_joint", "base_link", "palm", (0, 0, -0.065), (0, 0, 0), None),
    Link("palm_center_joint", "base_link", "palm_center", (0, 0, -0.03), (0, 0, 0), None),
)

# Catcher rows that differ from the thrower's (robot-cell.md, second table).
_CATCHER_CHANGES = {
    "joint_0.0": dict(xyz=(0, 0.0435, -0.001542), rpy=(-0.08726646255, 0, 0)),
    "joint_8.0": dict(xyz=(0, -0.0435, -0.001542), rpy=(0.08726646255, 0, 0)),
    "joint_12.0": dict(xyz=(-0.0182, 0.019333, -0.045987), rpy=(0, -1.65806278845, -1.5707963259), axis=(-1, 0, 0)),
    "joint_13.0": dict(xyz=(-0.027, 0.005, 0.0399), axis=(0, 0, 1)),
}

CHAINS: dict[str, tuple[Link, ...]] = {
    "thrower": _THROWER,
    "catcher": tuple(replace(link, **_CATCHER_CHANGES.get(link.joint, {})) for link in _THROWER),
}

LINK_MASS = {
    "link_base": 2.7, "link1": 2.16, "link2": 1.71, "link3": 1.384, "link4": 1.115, "link5": 1.275,
    "link6": 0.1096, "base_link": 0.4154,
    **{f"link_{i}.0": m for f in range(4) for i, m in zip(range(4 * f, 4 * f + 4), (0.005, 0.125164, 0.131691, 0.131691))},
}

ARM_JOINTS = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6")
HAND_JOINTS = tuple(f"joint_{i}.0" for i in range(16))
