"""A simulated cell behind the device interfaces: four joint groups and an object tracker, one
simulation (the MuJoCo twin, or the IsaacGym twin: any :class:`SimBackend`).

The caller's clock is the simulation time (``sim.time``). A read returns the simulation state at
``sim.time`` (stamped with it); a command sets the PD targets of the group's joints, which act
from the next physics step on. Positions and velocities are measured, efforts when the backend
says so. The tracker returns the newest camera frame that has arrived (capture stamp + latency <=
now) from the backend's :class:`~handover.sim_twin.camera_model.CameraModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState
from handover.drivers.object_tracker import ObjectObservation, ObjectTracker
from handover.runtime.cell_config import CellConfig
from handover.sim_twin.camera_model import CameraModel

GROUPS = (("thrower", "arm"), ("thrower", "hand"), ("catcher", "arm"), ("catcher", "hand"))


class SimBackend(Protocol):
    """What the simulated devices need of a twin. Joint indices are contract indices (0..43)."""

    name: str  # "twin", "isaacgym": prefix of the device names
    cfg: CellConfig
    camera: CameraModel
    provides_effort: bool

    @property
    def time(self) -> float: ...

    def read_joints(self, index: np.ndarray) -> JointState:
        """Positions (rad), velocities (rad/s), efforts (N*m, or None) of those joints, stamped with
        when they were measured (s, simulation time)."""
        ...

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        """PD position targets (rad) of those joints."""
        ...


class TwinJointGroup(JointGroup):
    def __init__(self, twin: SimBackend, side: str, group: str):
        group_cfg = getattr(getattr(twin.cfg, side), group)
        info = JointGroupInfo.from_config(group_cfg, provides_velocity=True, provides_effort=twin.provides_effort,
                                          gate=twin.cfg.gate, control_period_s=twin.cfg.control_period_s)
        super().__init__(info, name=f"{twin.name}/{side}/{group}")
        self.twin = twin
        self._index = np.array([twin.cfg.joint_names.index(n) for n in group_cfg.joints])  # by name

    def _on_read(self, now: float) -> JointState:
        return self.twin.read_joints(self._index)

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        self.twin.set_targets(self._index, targets)


class TwinObjectTracker(ObjectTracker):
    def __init__(self, twin: SimBackend):
        super().__init__(name=f"{twin.name}/object_tracker")
        self.twin = twin

    def _on_read(self, now: float) -> Optional[ObjectObservation]:
        return self.twin.camera.latest(now)


@dataclass
class TwinDevices:
    """Every device of the cell, backed by one simulation. ``joint_groups`` keys: ``(side, group)``."""

    twin: SimBackend
    joint_groups: dict[tuple[str, str], TwinJointGroup]
    tracker: TwinObjectTracker

    @staticmethod
    def create(twin: SimBackend) -> "TwinDevices":
        return TwinDevices(twin, {sg: TwinJointGroup(twin, *sg) for sg in GROUPS}, TwinObjectTracker(twin))

    def all(self):
        return [*self.joint_groups.values(), self.tracker]

    def bring_up(self) -> None:
        """configure() and activate() every device."""
        for dev in self.all():
            dev.configure()
            dev.activate()
