"""The twin behind the device interfaces: four joint groups and an object tracker, one simulation.

The caller's clock is the simulation time (``twin.time``). A read returns the simulation state at
``twin.time`` (stamped with it); a command sets the PD targets of the group's actuators, which act
from the next physics step on. Positions, velocities and efforts (actuator forces) are all
measured, so all are provided. The tracker returns the newest camera frame that has arrived
(capture stamp + latency <= now) from :class:`~handover.sim_twin.camera_model.CameraModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState
from handover.drivers.object_tracker import ObjectObservation, ObjectTracker
from handover.sim_twin.twin import Twin

GROUPS = (("thrower", "arm"), ("thrower", "hand"), ("catcher", "arm"), ("catcher", "hand"))


class TwinJointGroup(JointGroup):
    def __init__(self, twin: Twin, side: str, group: str):
        group_cfg = getattr(getattr(twin.cfg, side), group)
        info = JointGroupInfo(
            names=group_cfg.joints, lower=group_cfg.lower, upper=group_cfg.upper,
            provides_velocity=True, provides_effort=True,
        )
        super().__init__(info, name=f"twin/{side}/{group}")
        self.twin = twin
        index = [twin.joint_names.index(n) for n in group_cfg.joints]
        self._qpos = twin.qpos_adr[index]
        self._dof = twin.dof_adr[index]
        self._act = twin.actuator_ids[index]
        self.fail_next: Optional[Exception] = None  # tests: the next read or command raises this

    def _check_failure(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def _on_read(self, now: float) -> JointState:
        self._check_failure()
        d = self.twin.data
        return JointState(
            stamp=float(d.time),
            position=d.qpos[self._qpos].copy(),
            velocity=d.qvel[self._dof].copy(),
            effort=d.actuator_force[self._act].copy(),
        )

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        self._check_failure()
        self.twin.data.ctrl[self._act] = targets


class TwinObjectTracker(ObjectTracker):
    def __init__(self, twin: Twin):
        super().__init__(name="twin/object_tracker")
        self.twin = twin
        self.fail_next: Optional[Exception] = None

    def _on_read(self, now: float) -> Optional[ObjectObservation]:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return self.twin.camera.latest(now)


@dataclass
class TwinDevices:
    """Every device of the cell, backed by one twin. ``joint_groups`` keys: ``(side, group)``."""

    twin: Twin
    joint_groups: dict[tuple[str, str], TwinJointGroup]
    tracker: TwinObjectTracker

    @staticmethod
    def create(twin: Twin) -> "TwinDevices":
        return TwinDevices(twin, {sg: TwinJointGroup(twin, *sg) for sg in GROUPS}, TwinObjectTracker(twin))

    def all(self):
        return [*self.joint_groups.values(), self.tracker]

    def bring_up(self) -> None:
        """configure() and activate() every device."""
        for dev in self.all():
            dev.configure()
            dev.activate()
