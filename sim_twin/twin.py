"""The MuJoCo twin: one simulation of the whole cell, stepped in control periods.

Time is simulation time (s). One control period (``cfg.control_period_s``, 50 ms at the
original's 20 Hz) is ``substeps`` physics steps of ``cfg.twin.timestep_s``. The twin owns the
``MjModel``/``MjData``; the devices in :mod:`handover.sim_twin.devices` read and command through
it, so every node runs unchanged against the twin or the hardware.

Joint limits, as the training simulator has them:

- position: MuJoCo joint range constraints (soft, time constant 2 physics steps) at the config's
  training limits;
- effort: each PD position actuator's force range (arm 50/50/32/32/32/20 N m, hand 5 N m), a hard
  clamp of the drive torque, as IsaacGym's DOF ``effort`` is a hard limit of the PhysX drive;
- velocity (arm 3.14 rad/s, hand 3.0 rad/s, ``velocity_limit`` in the config): PhysX enforces its
  maximum joint velocity in the solver, before positions are integrated. MuJoCo has no joint
  velocity limit, so after every physics step the twin clamps the joints' velocities to their limit
  and re-integrates the positions from the step's start with the clamped velocity (MuJoCo
  integrates positions with the new velocity, so this is the step the solver would have taken
  with the velocity constraint active). Unlike PhysX's soft constraint this is a hard clamp.

Per episode: :meth:`Twin.reset` puts both sides at the contract's default pose (clamped to the
training limits), the object at its start position at rest, the PD targets at that pose, and
applies :class:`EpisodeParams`. :meth:`Twin.place_object` applies new parameters and puts the
object back at its start without moving the robots (the episode protocol's "place").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections import deque
from pathlib import Path
from typing import Optional

import mujoco
import numpy as np

from handover.calibration.pd_gains import GAINS_FILE, GainFactors, joint_group, load_gains
from handover.drivers.joint_group import JointState
from handover.runtime.cell_config import CellConfig
from handover.sim_twin.camera_model import CameraModel
from handover.sim_twin.model import build_model, home_joints


@dataclass(frozen=True)
class ThrowerRandomization:
    """The original's per-episode randomization of the thrower robot (its ``hand`` actor; the catcher
    is never randomized): per joint (22, contract order) PD stiffness and damping factors and
    additive offsets of the lower and upper position limits (rad); per moving link (by URDF link
    name) mass and friction factors (IsaacGym draws friction per collision shape; the twin per link,
    and in MuJoCo the object's friction governs its contacts, see :mod:`handover.sim_twin.model`)."""

    stiffness_scale: tuple[float, ...]
    damping_scale: tuple[float, ...]
    lower_offset: tuple[float, ...]
    upper_offset: tuple[float, ...]
    link_mass_scale: dict[str, float]
    link_friction_scale: dict[str, float]

    @staticmethod
    def sample(rng: np.random.Generator, links: tuple[str, ...]) -> "ThrowerRandomization":
        """Contract document: stiffness x loguniform[0.75, 1.5], damping x loguniform[0.3, 3.0], limits
        + N(0, 0.01), link masses x U(0.5, 1.5), friction x U(0.7, 1.3); each drawn per DOF or link."""
        n = 22
        loguniform = lambda lo, hi: tuple(float(v) for v in np.exp(rng.uniform(np.log(lo), np.log(hi), n)))  # noqa: E731
        return ThrowerRandomization(
            stiffness_scale=loguniform(0.75, 1.5),
            damping_scale=loguniform(0.3, 3.0),
            lower_offset=tuple(float(v) for v in rng.normal(0.0, 0.01, n)),
            upper_offset=tuple(float(v) for v in rng.normal(0.0, 0.01, n)),
            link_mass_scale={k: float(rng.uniform(0.5, 1.5)) for k in links},
            link_friction_scale={k: float(rng.uniform(0.7, 1.3)) for k in links},
        )


@dataclass(frozen=True)
class EpisodeParams:
    """Physical parameters of one episode, as factors of the nominal values in the cell config.

    ``hand_*_scale`` scale both hands' PD gains (for sweeps); ``thrower`` is the original's
    per-joint and per-link randomization of the thrower; ``gravity_offset`` (m/s^2, world) is added
    to gravity (the robots are gravity-compensated, so it acts on the object)."""

    mass_factor: float = 1.0
    friction_factor: float = 1.0
    scale_factor: float = 1.0  # object size
    hand_stiffness_scale: float = 1.0  # both hands' PD stiffness
    hand_damping_scale: float = 1.0  # both hands' PD damping
    thrower: Optional[ThrowerRandomization] = None
    gravity_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        for name in ("mass_factor", "friction_factor", "scale_factor", "hand_stiffness_scale", "hand_damping_scale"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"EpisodeParams.{name} must be a positive number, got {value!r}")
        if len(self.gravity_offset) != 3 or not np.isfinite(self.gravity_offset).all():
            raise ValueError(f"EpisodeParams.gravity_offset must be 3 finite numbers, got {self.gravity_offset!r}")

    @staticmethod
    def sample_training(rng: np.random.Generator, thrower_links: tuple[str, ...]) -> "EpisodeParams":
        """The original environment's training randomization (contract document): the object's mass
        x U(0.5, 1.5), friction x U(0.7, 1.3), scale x U(0.95, 1.05); the thrower's joints and links
        (:class:`ThrowerRandomization`); gravity + N(0, 0.4) per axis. The ramp-in over the first
        training frames is not modelled: every episode gets the full ranges."""
        return EpisodeParams(
            mass_factor=float(rng.uniform(0.5, 1.5)),
            friction_factor=float(rng.uniform(0.7, 1.3)),
            scale_factor=float(rng.uniform(0.95, 1.05)),
            thrower=ThrowerRandomization.sample(rng, thrower_links),
            gravity_offset=tuple(float(v) for v in rng.normal(0.0, 0.4, 3)),
        )

    def to_json(self) -> dict:
        """Plain numbers for reports (:meth:`from_json` reads them back)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "EpisodeParams":
        """The inverse of :meth:`to_json`."""
        d = dict(d)
        t = d.get("thrower")
        if t is not None:
            d["thrower"] = ThrowerRandomization(**{k: (dict(v) if isinstance(v, dict) else tuple(v)) for k, v in t.items()})
        d["gravity_offset"] = tuple(d.get("gravity_offset", (0.0, 0.0, 0.0)))
        return EpisodeParams(**d)


@dataclass(frozen=True)
class TimingJitter:
    """The timing of an unsynchronised real-time graph over the real devices, for lockstep runs:
    each new command takes effect after a delay drawn from U(0, ``command_delay_s``), and each joint
    reading is a sample U(0, ``reading_age_s``) old (drawn per command and per read), both rounded to
    the nearest physics step. Commands to a joint still act in the order sent, and a joint's readings
    never go back in time (a draw that would is moved forward). Defaults: 0-20 ms each."""

    command_delay_s: float = 0.02
    reading_age_s: float = 0.02

    def __post_init__(self):
        for name in ("command_delay_s", "reading_age_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"TimingJitter.{name} must be >= 0 s, got {v!r}")


@dataclass
class SpeedStats:
    """Joint speeds since the last :meth:`Twin.reset_speed_stats`, per joint (44, contract order):
    ``peak`` |velocity| (rad/s, at most the limit: the twin enforces it) and the number of physics
    steps in which the joint was held at its velocity limit, of ``steps``."""

    peak: np.ndarray
    saturated_steps: np.ndarray
    steps: int = 0

    @staticmethod
    def zeros() -> "SpeedStats":
        return SpeedStats(np.zeros(44), np.zeros(44, dtype=np.int64))


def calibrated_gains(cfg: CellConfig) -> GainFactors:
    """The PD gain factors of ``<devices.calibration_dir>/twin_pd_gains.yaml`` (``handover calibrate
    gains``), or unit factors when there is no such file."""
    path = Path(cfg.devices.calibration_dir) / GAINS_FILE
    return load_gains(path) if path.is_file() else GainFactors()


class Twin:
    name = "twin"  # device names: twin/thrower/arm, ...
    provides_effort = True  # actuator forces

    def __init__(self, cfg: CellConfig, seed: int = 0, gain_factors=None):
        """``gain_factors``: a :class:`~handover.calibration.pd_gains.GainFactors` scaling the PD
        gains per joint group (calibrated against the real cell); None: the config's
        ``<devices.calibration_dir>/twin_pd_gains.yaml`` if it exists, else nominal gains."""
        self.cfg = cfg
        self.gain_factors = calibrated_gains(cfg) if gain_factors is None else gain_factors
        self.model = build_model(cfg)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.substeps = int(round(cfg.control_period_s / m.opt.timestep))
        joints = [m.joint(n).id for n in cfg.joint_names]
        self.qpos_adr = np.array([m.jnt_qposadr[j] for j in joints])
        self.dof_adr = np.array([m.jnt_dofadr[j] for j in joints])
        self.joint_ids = np.array(joints)
        self.actuator_ids = np.array([m.actuator(n).id for n in cfg.joint_names])
        self.velocity_limit = np.asarray(cfg.velocity_limit, dtype=float)  # rad/s, contract order
        self.object_body = m.body("object").id
        self.object_geom = m.geom("object").id
        obj_joint = m.joint("object").id
        self.object_qpos = m.jnt_qposadr[obj_joint]
        self.object_dof = m.jnt_dofadr[obj_joint]
        hand = np.array([i for i, n in enumerate(cfg.joint_names) if "/joint_" in n])
        self.hand_actuators = self.actuator_ids[hand]
        self.joint_groups = tuple(joint_group(n) for n in cfg.joint_names)  # 44 x "thrower/arm", ...
        # The thrower's moving links (URDF names) and their geoms, for the per-link randomization.
        self.thrower_links = tuple(sorted(
            m.body(b).name.split("/", 1)[1] for b in range(m.nbody)
            if m.body(b).name.startswith("thrower/") and m.body_jntnum[b] > 0 or m.body(b).name == "thrower/base_link"))
        self._link_body = {k: m.body(f"thrower/{k}").id for k in self.thrower_links}
        self._link_geoms = {k: np.flatnonzero(m.geom_bodyid == b) for k, b in self._link_body.items()}
        self._nominal = {
            "mass": float(m.body_mass[self.object_body]),
            "inertia": m.body_inertia[self.object_body].copy(),
            "friction": m.geom_friction[self.object_geom].copy(),
            "size": m.geom_size[self.object_geom].copy(),
            "rbound": float(m.geom_rbound[self.object_geom]),
            "aabb": m.geom_aabb[self.object_geom].copy(),
            "gain": m.actuator_gainprm[self.actuator_ids, 0].copy(),
            "bias": m.actuator_biasprm[self.actuator_ids, :3].copy(),
            "range": m.jnt_range[self.joint_ids].copy(),
            "ctrlrange": m.actuator_ctrlrange[self.actuator_ids].copy(),
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "geom_friction": m.geom_friction.copy(),
            "gravity": m.opt.gravity.copy(),
        }
        self.camera = CameraModel(cfg.twin.tracker, seed=seed)
        self.params = EpisodeParams()
        self.episode = 0
        self.timing: Optional[TimingJitter] = None
        self.timing_rng = np.random.default_rng(seed)
        self._pending: list[tuple[float, np.ndarray, np.ndarray]] = []  # (effective time, index, targets)
        self._samples: deque = deque(maxlen=1)  # (time, qpos44, qvel44, force44), newest last
        # Per joint: the latest delivery time of a delayed command and the latest sample time read,
        # so that jittered commands to a joint act in the order sent and its readings never go back.
        self._last_due = np.full(44, -np.inf)
        self._last_read = np.full(44, -np.inf)
        self.speed_stats = SpeedStats.zeros()
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

    def reset_speed_stats(self) -> None:
        """Start counting :attr:`speed_stats` afresh."""
        self.speed_stats = SpeedStats.zeros()

    def set_timing(self, timing: Optional[TimingJitter], rng: Optional[np.random.Generator] = None) -> None:
        """Lockstep (None) or jittered command and reading times (see :class:`TimingJitter`)."""
        self.timing = timing
        if rng is not None:
            self.timing_rng = rng
        self._pending.clear()
        self._last_due[:] = -np.inf
        self._last_read[:] = -np.inf
        n = 1 if timing is None else int(np.ceil(timing.reading_age_s / self.model.opt.timestep)) + 2
        self._samples = deque(maxlen=n)
        self._record_sample()

    def _physics_step(self) -> None:
        m, d = self.model, self.data
        if self._pending:
            self._apply_due_commands()
        q0 = d.qpos[self.qpos_adr].copy()
        mujoco.mj_step(m, d)
        # The joints' velocity limits (module docstring): clamp, then re-integrate from q0.
        v = d.qvel[self.dof_adr]
        speed = np.abs(v)
        at_limit = speed >= self.velocity_limit
        if at_limit.any():
            v = np.clip(v, -self.velocity_limit, self.velocity_limit)
            d.qvel[self.dof_adr] = v
            d.qpos[self.qpos_adr] = q0 + m.opt.timestep * v
            self.speed_stats.saturated_steps += at_limit
        np.maximum(self.speed_stats.peak, np.minimum(speed, self.velocity_limit), out=self.speed_stats.peak)
        self.speed_stats.steps += 1
        self._record_sample()
        self.camera.observe(d.time, self.object_position())

    def _record_sample(self) -> None:
        d = self.data
        self._samples.append((float(d.time), d.qpos[self.qpos_adr].copy(), d.qvel[self.dof_adr].copy(),
                              d.actuator_force[self.actuator_ids].copy()))

    def _apply_due_commands(self) -> None:
        now = self.time + 0.5 * self.model.opt.timestep  # the physics step nearest to each delivery time
        due = [c for c in self._pending if c[0] <= now]
        if due:
            self._pending = [c for c in self._pending if c[0] > now]
            for _, index, targets in due:
                self.data.ctrl[self.actuator_ids[index]] = targets

    # -- episodes ---------------------------------------------------------------------------------

    def reset(self, params: Optional[EpisodeParams] = None, object_start: Optional[np.ndarray] = None) -> None:
        """Start an episode: default pose, object at ``object_start`` (default: the config's), at rest."""
        d = self.data
        mujoco.mj_resetData(self.model, d)
        q = home_joints(self.cfg)
        d.qpos[self.qpos_adr] = q
        d.ctrl[self.actuator_ids] = q
        self._pending.clear()
        self._last_due[:] = -np.inf  # time starts again: no delivery or reading order to keep
        self._last_read[:] = -np.inf
        self.place_object(params, object_start)
        self._samples.clear()
        self._record_sample()
        self.camera.reset(d.time)
        self.camera.observe(d.time, self.object_position())

    def place_object(self, params: Optional[EpisodeParams] = None, object_start: Optional[np.ndarray] = None) -> None:
        """Apply ``params`` (default: nominal) and put the object at ``object_start`` (default: the
        config's) at rest, upright; the robots stay where they are. Counts a new episode."""
        self.params = params or EpisodeParams()
        self._apply_params(self.params)
        d = self.data
        # Constants derived from masses and inertias are cached in the model (MuJoCo 4 uses them in
        # the dynamics); without this, a changed object mass falls at the wrong acceleration.
        # mj_setConst works at qpos0 in ``d``: keep the state around it.
        saved = d.qpos.copy(), d.qvel.copy(), d.act.copy(), d.ctrl.copy(), d.time
        mujoco.mj_setConst(self.model, d)
        d.qpos[:], d.qvel[:], d.act[:], d.ctrl[:], d.time = saved
        start = self.cfg.object.start_position if object_start is None else object_start
        d.qpos[self.object_qpos:self.object_qpos + 7] = [*start, 1.0, 0.0, 0.0, 0.0]
        d.qvel[self.object_dof:self.object_dof + 6] = 0.0
        mujoco.mj_forward(self.model, d)
        self.episode += 1

    def _apply_params(self, p: EpisodeParams) -> None:
        m, nom, g, b = self.model, self._nominal, self.object_geom, self.object_body
        m.body_mass[:] = nom["body_mass"]
        m.body_inertia[:] = nom["body_inertia"]
        m.geom_friction[:] = nom["geom_friction"]
        m.opt.gravity[:] = nom["gravity"] + np.asarray(p.gravity_offset)
        m.body_mass[b] = nom["mass"] * p.mass_factor
        m.body_inertia[b] = nom["inertia"] * p.mass_factor * p.scale_factor**2
        m.geom_friction[g] = nom["friction"] * np.array([p.friction_factor, 1.0, 1.0])
        m.geom_size[g] = nom["size"] * p.scale_factor
        m.geom_rbound[g] = nom["rbound"] * p.scale_factor
        m.geom_aabb[g] = np.concatenate([nom["aabb"][:3] * p.scale_factor, nom["aabb"][3:] * p.scale_factor])
        # calibrated x nominal x this episode's
        kp = np.array([self.gain_factors.kp(g) for g in self.joint_groups])
        kd = np.array([self.gain_factors.kd(g) for g in self.joint_groups])
        hand = np.isin(self.actuator_ids, self.hand_actuators)
        kp[hand] *= p.hand_stiffness_scale
        kd[hand] *= p.hand_damping_scale
        rng = nom["range"].copy()
        if p.thrower is not None:
            t = p.thrower
            kp[:22] *= np.asarray(t.stiffness_scale)
            kd[:22] *= np.asarray(t.damping_scale)
            rng[:22, 0] += np.asarray(t.lower_offset)
            rng[:22, 1] += np.asarray(t.upper_offset)
            for link, scale in t.link_mass_scale.items():
                m.body_mass[self._link_body[link]] *= scale
                m.body_inertia[self._link_body[link]] *= scale
            for link, scale in t.link_friction_scale.items():
                m.geom_friction[self._link_geoms[link], 0] *= scale
        m.actuator_gainprm[self.actuator_ids, 0] = nom["gain"] * kp
        m.actuator_biasprm[self.actuator_ids, 1] = nom["bias"][:, 1] * kp
        m.actuator_biasprm[self.actuator_ids, 2] = nom["bias"][:, 2] * kd
        # A randomized limit pair that crosses keeps its nominal order (never lo > hi).
        rng = np.where((rng[:, 0] < rng[:, 1])[:, None], rng, nom["range"])
        m.jnt_range[self.joint_ids] = rng
        m.actuator_ctrlrange[self.actuator_ids] = rng

    # -- state ------------------------------------------------------------------------------------

    def read_joints(self, index: np.ndarray) -> JointState:
        """Positions (rad), velocities (rad/s) and actuator forces (N*m) of joints ``index`` (contract
        order), stamped with when they were measured (s, simulation time): now, or with
        :class:`TimingJitter` a sample up to ``reading_age_s`` old."""
        sample = self._samples[-1]
        if self.timing is not None and self.timing.reading_age_s > 0 and len(self._samples) > 1:
            wanted = self.time - self.timing_rng.uniform(0.0, self.timing.reading_age_s)
            wanted = max(wanted, float(self._last_read[index].max()))  # never older than the last read
            for s in reversed(self._samples):  # the sample nearest to `wanted` (to half a physics step)
                sample = s
                if s[0] <= wanted + 0.5 * self.model.opt.timestep:
                    break
        t, q, v, f = sample
        self._last_read[index] = t
        return JointState(stamp=t, position=q[index].copy(), velocity=v[index].copy(), effort=f[index].copy())

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        """PD position targets (rad) of joints ``index``: they act from the next physics step, or with
        :class:`TimingJitter` from the first physics step after a random delay."""
        if self.timing is not None and self.timing.command_delay_s > 0:
            due = self.time + self.timing_rng.uniform(0.0, self.timing.command_delay_s)
            due = max(due, float(self._last_due[index].max()))  # in the order sent
            self._last_due[index] = due
            self._pending.append((due, np.asarray(index).copy(), np.asarray(targets, dtype=float).copy()))
            return
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
