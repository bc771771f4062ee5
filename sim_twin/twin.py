"""The MuJoCo twin: one simulation of the whole cell, stepped in control periods.

Time is simulation time (s). One control period (1/60 s) is ``substeps`` physics steps. The
twin owns the ``MjModel``/``MjData``; the devices in :mod:`handover.sim_twin.devices` read and
command through it, so every node runs unchanged against the twin or the hardware.

Per episode: :meth:`Twin.reset` puts both sides at the contract's default pose (clamped to the
training limits), the object at its start position at rest, the PD targets at that pose, and
applies :class:`EpisodeParams` (object mass/friction/size factors, hand PD gain scales).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mujoco
import numpy as np

from handover.runtime.cell_config import CellConfig
from handover.sim_twin.camera_model import CameraModel
from handover.sim_twin.model import build_model, home_qpos


@dataclass(frozen=True)
class EpisodeParams:
    """Physical parameters of one episode, as factors of the nominal values in the cell config."""

    mass_factor: float = 1.0
    friction_factor: float = 1.0
    scale_factor: float = 1.0  # object size
    hand_stiffness_scale: float = 1.0  # both hands' PD stiffness
    hand_damping_scale: float = 1.0  # both hands' PD damping

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"EpisodeParams.{name} must be a positive number, got {value!r}")

    @staticmethod
    def sample_training(rng: np.random.Generator) -> "EpisodeParams":
        """The training-time randomization of the original environment (contract document)."""
        return EpisodeParams(
            mass_factor=float(rng.uniform(0.5, 1.5)),
            friction_factor=float(rng.uniform(0.7, 1.3)),
            scale_factor=float(rng.uniform(0.95, 1.05)),
            hand_stiffness_scale=float(np.exp(rng.uniform(np.log(0.75), np.log(1.5)))),
            hand_damping_scale=float(np.exp(rng.uniform(np.log(0.3), np.log(3.0)))),
        )


class Twin:
    name = "twin"  # device names: twin/thrower/arm, ...
    provides_effort = True  # actuator forces

    def __init__(self, cfg: CellConfig, seed: int = 0):
        self.cfg = cfg
        self.model = build_model(cfg)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.substeps = int(round(cfg.control_period_s / m.opt.timestep))
        self.qpos_adr = np.array([m.jnt_qposadr[m.joint(n).id] for n in cfg.joint_names])
        self.dof_adr = np.array([m.jnt_dofadr[m.joint(n).id] for n in cfg.joint_names])
        self.actuator_ids = np.array([m.actuator(n).id for n in cfg.joint_names])
        self.object_body = m.body("object").id
        self.object_geom = m.geom("object").id
        obj_joint = m.joint("object").id
        self.object_qpos = m.jnt_qposadr[obj_joint]
        self.object_dof = m.jnt_dofadr[obj_joint]
        hand = np.array([i for i, n in enumerate(cfg.joint_names) if "/joint_" in n])
        self.hand_actuators = self.actuator_ids[hand]
        self._nominal = {
            "mass": float(m.body_mass[self.object_body]),
            "inertia": m.body_inertia[self.object_body].copy(),
            "friction": m.geom_friction[self.object_geom].copy(),
            "size": m.geom_size[self.object_geom].copy(),
            "rbound": float(m.geom_rbound[self.object_geom]),
            "aabb": m.geom_aabb[self.object_geom].copy(),
            "gain": m.actuator_gainprm[self.hand_actuators, 0].copy(),
            "bias": m.actuator_biasprm[self.hand_actuators, :3].copy(),
        }
        self.camera = CameraModel(cfg.twin.tracker, seed=seed)
        self.params = EpisodeParams()
        self.episode = 0
        self.reset()

    # -- time -------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Simulation time, s."""
        return float(self.data.time)

    def step(self, control_steps: int = 1) -> float:
        """Advance ``control_steps`` control periods; returns the new simulation time."""
        for _ in range(control_steps * self.substeps):
            self._physics_step()
        return self.time

    def advance(self, dt: float) -> float:
        """Advance by at least ``dt`` seconds in whole physics steps; returns the new time."""
        steps = max(0, int(np.ceil(dt / self.model.opt.timestep - 1e-9)))
        for _ in range(steps):
            self._physics_step()
        return self.time

    def _physics_step(self) -> None:
        mujoco.mj_step(self.model, self.data)
        self.camera.observe(self.data.time, self.object_position())

    # -- episodes ---------------------------------------------------------------------------------

    def reset(self, params: Optional[EpisodeParams] = None, object_start: Optional[np.ndarray] = None) -> None:
        """Start an episode: default pose, object at ``object_start`` (default: the config's), at rest."""
        self.params = params or EpisodeParams()
        self._apply_params(self.params)
        d = self.data
        # Constants derived from masses and inertias are cached in the model (MuJoCo 4 uses them in
        # the dynamics); without this, a changed object mass falls at the wrong acceleration.
        mujoco.mj_setConst(self.model, d)
        mujoco.mj_resetData(self.model, d)
        qpos = home_qpos(self.cfg)
        if object_start is not None:
            qpos[-7:-4] = object_start
        d.qpos[self.qpos_adr] = qpos[:44]
        d.qpos[self.object_qpos:self.object_qpos + 7] = qpos[44:]
        d.ctrl[self.actuator_ids] = qpos[:44]
        mujoco.mj_forward(self.model, d)
        self.camera.reset(d.time)
        self.camera.observe(d.time, self.object_position())
        self.episode += 1

    def _apply_params(self, p: EpisodeParams) -> None:
        m, nom, g, b = self.model, self._nominal, self.object_geom, self.object_body
        m.body_mass[b] = nom["mass"] * p.mass_factor
        m.body_inertia[b] = nom["inertia"] * p.mass_factor * p.scale_factor**2
        m.geom_friction[g] = nom["friction"] * np.array([p.friction_factor, 1.0, 1.0])
        m.geom_size[g] = nom["size"] * p.scale_factor
        m.geom_rbound[g] = nom["rbound"] * p.scale_factor
        m.geom_aabb[g] = np.concatenate([nom["aabb"][:3] * p.scale_factor, nom["aabb"][3:] * p.scale_factor])
        m.actuator_gainprm[self.hand_actuators, 0] = nom["gain"] * p.hand_stiffness_scale
        m.actuator_biasprm[self.hand_actuators, 1] = nom["bias"][:, 1] * p.hand_stiffness_scale
        m.actuator_biasprm[self.hand_actuators, 2] = nom["bias"][:, 2] * p.hand_damping_scale

    # -- state ------------------------------------------------------------------------------------

    def read_joints(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (rad), velocities (rad/s) and actuator forces (N*m) of joints ``index`` (contract order)."""
        d = self.data
        return d.qpos[self.qpos_adr[index]].copy(), d.qvel[self.dof_adr[index]].copy(), d.actuator_force[self.actuator_ids[index]].copy()

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        """PD position targets (rad) of joints ``index``; they act from the next physics step."""
        self.data.ctrl[self.actuator_ids[index]] = targets

    def joint_positions(self) -> np.ndarray:
        """All 44 joint positions (rad), contract order."""
        return self.data.qpos[self.qpos_adr].copy()

    def object_position(self) -> np.ndarray:
        """True object position (m, world). From qpos: after ``mj_step`` the kinematics (``xpos``)
        still describe the state before the step's integration."""
        return self.data.qpos[self.object_qpos:self.object_qpos + 3].copy()

    def object_velocity(self) -> np.ndarray:
        """True object linear velocity (m/s, world)."""
        return self.data.qvel[self.object_dof:self.object_dof + 3].copy()

    def set_object_state(self, position: np.ndarray, velocity: np.ndarray) -> None:
        """Place the object (m, world, upright) with a linear velocity (m/s, world)."""
        d = self.data
        d.qpos[self.object_qpos:self.object_qpos + 7] = [*position, 1.0, 0.0, 0.0, 0.0]
        d.qvel[self.object_dof:self.object_dof + 6] = [*velocity, 0.0, 0.0, 0.0]
        mujoco.mj_forward(self.model, d)
