"""Drive the MuJoCo twin open loop by a sequence of recorded PD targets: the one rollout that both the
bag replay (:mod:`handover.sim_twin.replay_bag`) and the PD gain search
(:mod:`handover.sim_twin.gain_search`) run, so a calibration fits exactly what the replay shows.

:func:`rollout`: the recorded joints (contract indices ``cols``) start at the given positions and
velocities with their PD targets there (the other joints stay where the twin's reset put them),
then per period the period's targets are set (acting from the next physics step, as on the cell)
and the twin steps one period (lockstep). A bag is replayed with the physics step as the period, so
each command acts from the first physics step at or after its stamp, as in the twin node; an
``.npz`` recording of the control loop has the control period. The object is set (position m, velocity
m/s, world, upright) before the periods given in ``object_states`` (period 0: the start; later ones:
an operator placing it between episodes). Returns the joint positions (T+1, J) rad and the object
positions (T+1, 3) m, before the first period and after each.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import mujoco
import numpy as np

from handover.sim_twin.twin import Twin


def rollout(twin: Twin, cols: np.ndarray, positions0: np.ndarray, velocities0: Optional[np.ndarray],
            commands: np.ndarray, period_s: float, object_states: Optional[Mapping[int, tuple]] = None,
            progress: Optional[Callable[[int, int], None]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``commands`` (T, J), one per ``period_s`` (a whole number of the twin's physics steps), from
    the state ``positions0``/``velocities0`` (J,) in ``twin`` (module doc). ``progress(k, T)`` is
    called every 1000 periods."""
    physics = twin.model.opt.timestep
    substeps = int(round(period_s / physics))
    if substeps < 1 or abs(substeps * physics - period_s) > 1e-9:
        raise ValueError(f"period {period_s:g} s is not a whole number of the twin's physics steps ({physics:g} s)")
    d = twin.data
    d.qpos[twin.qpos_adr[cols]] = positions0
    d.qvel[twin.dof_adr[cols]] = 0.0 if velocities0 is None else velocities0
    d.ctrl[twin.actuator_ids[cols]] = positions0
    mujoco.mj_forward(twin.model, d)
    states = dict(object_states or {})
    steps = len(commands)
    q = np.empty((steps + 1, len(cols)))
    obj = np.empty((steps + 1, 3))
    for k in range(steps + 1):
        if k in states:
            position, velocity = states[k]
            twin.set_object_state(np.asarray(position, float), np.asarray(velocity, float))
        q[k], obj[k] = d.qpos[twin.qpos_adr[cols]], twin.object_position()
        if k < steps:
            twin.set_targets(cols, commands[k])
            twin.advance(period_s)
        if progress is not None and k % 1000 == 999:
            progress(k + 1, steps)
    return q, obj
