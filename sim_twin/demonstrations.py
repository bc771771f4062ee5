"""Demonstrations in the twin: recording episodes of an action-space policy (the scripted expert,
optionally mixed with a learner for DAgger), the ``.npz`` dataset format, and the training samples
rebuilt from a dataset exactly as the contract builds them at deployment.

Recording
---------
:class:`ActionController` is a :class:`~handover.sim_twin.episode.Controller`. It owns one
:class:`~handover.runtime.contract_state.ContractState` for the whole run (the frame stack carries
over between episodes, a quirk of the original), and per control step does what
:class:`~handover.runtime.policy_step.PolicyStep` does at deployment:

1. object position = the tracker's latest valid observation (the configured start position until
   the first one, the last valid one after a dropout) -> ``push_object`` -> 60-number history;
2. predicted goal = goal estimator on the history (a :data:`GoalFn`; none yet: 0, relative);
3. ``inputs`` -> the actors' two 450-number inputs;
4. the expert's action (the label) from :class:`ContractInputs` (an ``ActionInputs`` that also
   carries 1-3); with probability ``beta`` the learner's action is executed instead (DAgger);
5. ``apply`` maps the executed action (clipped to [-1, 1]) to the 44 joint targets.

So the expert and a learned policy see and act through the same contract path as the runtime.

Dataset (``.npz``, format :data:`DATASET_FORMAT`)
-------------------------------------------------
E episodes of T control steps, in recording order. Arrays (dtype, shape), see :data:`SCHEMA`:

per step (E, T, ...), in the replay's terms (``handover contract replay``)::

    thrower_q       float32 (E, T, 22)  measured joint positions before the step's command, rad
    catcher_q       float32 (E, T, 22)
    object_pos      float32 (E, T, 3)   object position the contract used (latest valid tracker
                                        observation; start position until the first), world, m
    object_valid    bool    (E, T)      the tracker's observation of this step was valid
    actions         float32 (E, T, 44)  executed actions, clipped to [-1, 1] (thrower ++ catcher)
    expert_actions  float32 (E, T, 44)  the expert's actions (the labels), clipped to [-1, 1]
    learner_acted   bool    (E, T)      the executed action was the learner's (DAgger)
    targets         float32 (E, T, 44)  contract joint targets after the step's action, rad
    predicted_goal  float32 (E, T, 3)   predicted goal fed to the live contract, world, m (the thrower
                                        base position, i.e. 0 relative, when recorded without a goal estimator)
    object_true     float32 (E, T, 3)   true object position after the step (twin), world, m

per episode (E, ...)::

    goal_pos        float32 (E, 3)  throwing goal, world, m
    true_goal       float32 (E, 3)  true object position at the end of the episode (the arrival
                                    point the goal estimator learns), world, m
    true_goal_rel   float32 (E, 3)  the same relative to the thrower base, m
    mass_factor, friction_factor, scale_factor, hand_stiffness_scale, hand_damping_scale
                    float64 (E,)    the episode's EpisodeParams
    success         bool    (E,)    ``handover.sim_twin.success.judge(twin).success`` at the episode end
    seed            int64   (E,)    episode seed: params from default_rng([seed, 0]), camera noise
                                    from default_rng([seed, 1]), DAgger mixing from default_rng([seed, 2])
    run             int32   (E,)    recording run; the episodes of one run are consecutive and shared
                                    one ContractState (frame stack carried over), starting from zeros
    round           int32   (E,)    0 = expert demonstrations, r = DAgger round r
    beta            float64 (E,)    probability that the learner's action was executed

and ``format`` (str, ``"handover-demonstrations/1"``), ``thrower_base`` float32 (3,) (world, m).

Training samples
----------------
:func:`build_actor_inputs` replays every run through a fresh ``ContractState`` in recording order,
executing the logged actions, with the predicted goal from a given :data:`GoalFn` (the trained goal
estimator): the actors are trained on exactly the inputs they will see at deployment.
:func:`goal_samples`: history (60) -> true goal relative to the thrower base, at every step.
:func:`property_samples`: windows of the last 20 steps of ``[object_rel (3), thrower_q (22),
catcher_q (22)]`` (940 numbers, oldest first, zero rows before the episode start, exactly as
:class:`~handover.runtime.policy_step.PropertyWindow`), one ending at every step -> mass factor.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from handover.drivers.object_tracker import ObjectObservation
from handover.runtime.cell_config import CellConfig, SIDE_DOFS
from handover.runtime.contract import AGENT_INPUT_SIZE, DOFS, HISTORY_LEN, PROPERTY_HISTORY_LEN, PROPERTY_STEP_SIZE, ContractSpec
from handover.runtime.contract_state import ContractNoise, ContractState
from handover.runtime.errors import InputError
from handover.runtime.files import atomic_write, load_npz
from handover.runtime.observation import ObjectHistory
from handover.runtime.policy_step import PropertyWindow
from handover.runtime.replay import check_log
from handover.sim_twin.expert import ActionInputs, ActionPolicy
from handover.sim_twin.twin import EpisodeParams

DATASET_FORMAT = "handover-demonstrations/2"

# (N, 60) object histories (m, relative to the thrower base) -> (N, 3) predicted goals (same frame).
GoalFn = Callable[[np.ndarray], np.ndarray]
# (N, 450) agent inputs -> (N, 22) raw actions.
ActorFn = Callable[[np.ndarray], np.ndarray]
# The twin at the end of an episode -> success.
JudgeFn = Callable[[object], bool]


# --------------------------------------------------------------------------------------------
# the controller
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractInputs(ActionInputs):
    """:class:`ActionInputs` plus what the contract built this step (the learner's inputs)."""

    history: Optional[np.ndarray] = None  # (60,) object history, relative to the thrower base, m
    predicted_goal: Optional[np.ndarray] = None  # (3,) goal-estimator output, relative to the thrower base, m
    thrower_input: Optional[np.ndarray] = None  # (450,)
    catcher_input: Optional[np.ndarray] = None  # (450,)


class LearnerPolicy:
    """An :class:`ActionPolicy` made of trained networks: a goal estimator and two actors.

    It reads its inputs from :class:`ContractInputs`, i.e. from the :class:`ActionController`'s
    ``ContractState`` (the runtime's path); the controller calls :attr:`predict_goal` between
    ``push_object`` and ``inputs``.
    """

    def __init__(self, predict_goal: GoalFn, thrower: ActorFn, catcher: ActorFn):
        self.predict_goal = predict_goal
        self.thrower, self.catcher = thrower, catcher

    @staticmethod
    def from_torch(goal_estimator, thrower_actor, catcher_actor) -> "LearnerPolicy":
        """From torch modules (``TrajEstimator``, two feed-forward ``Actor``)."""
        from handover.sim_twin.training import actor_fn, goal_fn

        return LearnerPolicy(goal_fn(goal_estimator), actor_fn(thrower_actor), actor_fn(catcher_actor))

    def reset(self, params=None) -> None:
        pass

    def act(self, x: ActionInputs) -> np.ndarray:
        if not isinstance(x, ContractInputs) or x.thrower_input is None:
            raise TypeError(f"LearnerPolicy needs ContractInputs built by an ActionController, got {type(x).__name__}")
        a = np.concatenate([
            np.asarray(self.thrower(x.thrower_input[None]), np.float32).reshape(SIDE_DOFS),
            np.asarray(self.catcher(x.catcher_input[None]), np.float32).reshape(SIDE_DOFS),
        ])
        return np.clip(a, -1.0, 1.0)


@dataclass
class EpisodeLog:
    """What :class:`ActionController` logged in one episode (T steps); arrays (T, ...) float32."""

    thrower_q: np.ndarray
    catcher_q: np.ndarray
    object_pos: np.ndarray
    object_valid: np.ndarray  # bool
    actions: np.ndarray
    expert_actions: np.ndarray
    learner_acted: np.ndarray  # bool
    targets: np.ndarray
    predicted_goal: np.ndarray  # world, m
    thrower_input: np.ndarray  # (T, 450) the live inputs (not saved in the dataset; rebuilt from it)
    catcher_input: np.ndarray  # (T, 450)


class ActionController:
    """Runs an :class:`ActionPolicy` (the expert) through the contract; see the module docstring.

    Args:
        spec: the contract's cell numbers.
        expert: labels every step (and acts, unless the learner does).
        goal_world: throwing goal (3), world, m.
        object_start: object position (3) used until the tracker's first valid observation, world, m.
        twin: passed to the policies for privileged information (None on hardware).
        predict_goal: goal estimator; default: the learner's, else none (predicted goal 0, relative).
        learner: a policy whose action is executed with probability ``beta`` per step (DAgger).
        noise: the contract's noise (history noise, and the training randomization's observation
            and action noise), drawn from the generator given to :meth:`begin_episode`.
    """

    def __init__(
        self,
        spec: ContractSpec,
        expert: ActionPolicy,
        goal_world,
        object_start,
        twin=None,
        predict_goal: Optional[GoalFn] = None,
        learner: Optional[ActionPolicy] = None,
        beta: float = 0.0,
        noise: ContractNoise = ContractNoise(),
    ):
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ActionController: beta must be in [0, 1], got {beta}")
        if beta > 0 and learner is None:
            raise ValueError(f"ActionController: beta = {beta} needs a learner policy")
        self.spec = spec
        self.state = ContractState(spec, noise)
        self.noise = noise
        self.expert, self.learner, self.beta = expert, learner, float(beta)
        self.predict_goal = predict_goal or getattr(learner, "predict_goal", None)
        self.goal = np.asarray(goal_world, dtype=np.float32).reshape(3)
        self.object_start = np.asarray(object_start, dtype=np.float32).reshape(3)
        self.twin = twin
        self.params: Optional[EpisodeParams] = None
        self.rng = np.random.default_rng(0)
        self._step = 0
        self._last_object = self.object_start.copy()
        self._log: dict[str, list] = {}

    def begin_episode(self, params: Optional[EpisodeParams], rng: Optional[np.random.Generator] = None,
                      goal=None, noise_rng: Optional[np.random.Generator] = None) -> None:
        """Set the next episode's parameters (passed to the policies' ``reset``), its DAgger mixing
        generator, the generator of the contract's noise (``noise_rng``; default ``rng``) and, if
        given, its throwing goal (m, world)."""
        self.params = params
        if rng is not None:
            self.rng = rng
        if noise_rng is not None or rng is not None:
            self.state.set_noise(self.noise, noise_rng if noise_rng is not None else rng)
        if goal is not None:
            self.goal = np.asarray(goal, dtype=np.float32).reshape(3)

    # -- Controller ---------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        self._step = 0
        self._last_object = self.object_start.copy()
        self._log = {f.name: [] for f in dataclasses.fields(EpisodeLog)}
        self.expert.reset(self.params)
        if self.learner is not None:
            self.learner.reset(self.params)
        return self.state.reset()

    def targets(self, t: float, joint_positions: np.ndarray, obs: ObjectObservation) -> np.ndarray:
        if obs.valid:
            self._last_object = np.asarray(obs.position, dtype=np.float32)
        q = np.asarray(joint_positions, dtype=np.float32).reshape(DOFS)
        obj = self._last_object.copy()
        history = self.state.push_object(obj)
        if self.predict_goal is not None:
            pred = np.asarray(self.predict_goal(history[None]), np.float32).reshape(3)
        else:
            pred = np.zeros(3, np.float32)
        t_in, c_in = self.state.inputs(q[:SIDE_DOFS], q[SIDE_DOFS:], self.goal, pred)
        x = ContractInputs(
            step=self._step, joint_positions=q, object_position=obj, goal=self.goal.copy(),
            targets=self.state.mapper.targets.copy(), twin=self.twin,
            history=history, predicted_goal=pred, thrower_input=t_in, catcher_input=c_in,
        )
        label = np.clip(np.asarray(self.expert.act(x), np.float32).reshape(DOFS), -1.0, 1.0)
        learner_acts = self.learner is not None and self.beta > 0 and self.rng.random() < self.beta
        executed = np.clip(np.asarray(self.learner.act(x), np.float32).reshape(DOFS), -1.0, 1.0) if learner_acts else label
        targets = self.state.apply(executed)
        for name, value in (
            ("thrower_q", q[:SIDE_DOFS]), ("catcher_q", q[SIDE_DOFS:]), ("object_pos", obj),
            ("object_valid", bool(obs.valid)), ("actions", executed), ("expert_actions", label),
            ("learner_acted", learner_acts), ("targets", targets), ("predicted_goal", pred + self.spec.thrower_base),
            ("thrower_input", t_in), ("catcher_input", c_in),
        ):
            self._log[name].append(value)
        self._step += 1
        return targets

    def episode_log(self) -> EpisodeLog:
        """The log of the episode since the last :meth:`reset`."""
        return EpisodeLog(**{k: np.asarray(v, dtype=bool if k in ("object_valid", "learner_acted") else np.float32)
                             for k, v in self._log.items()})


# --------------------------------------------------------------------------------------------
# the dataset format
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """One array of a file format: shape with symbolic dims (``"E"`` episodes, ``"T"`` steps) and dtype."""

    shape: tuple
    dtype: str  # numpy dtype name the array is stored with


_F32, _F64 = "float32", "float64"
# The scalar EpisodeParams a dataset keeps as arrays; all of an episode's parameters (the thrower's
# per-joint and per-link randomization and the gravity offset too) are in its ``params_json``.
PARAM_NAMES = ("mass_factor", "friction_factor", "scale_factor", "hand_stiffness_scale", "hand_damping_scale")
_STR = "str"  # a unicode string array (any length)

SCHEMA: dict[str, ArraySpec] = {
    # per step
    "thrower_q": ArraySpec(("E", "T", SIDE_DOFS), _F32),
    "catcher_q": ArraySpec(("E", "T", SIDE_DOFS), _F32),
    "object_pos": ArraySpec(("E", "T", 3), _F32),
    "object_valid": ArraySpec(("E", "T"), "bool"),
    "actions": ArraySpec(("E", "T", DOFS), _F32),
    "expert_actions": ArraySpec(("E", "T", DOFS), _F32),
    "learner_acted": ArraySpec(("E", "T"), "bool"),
    "targets": ArraySpec(("E", "T", DOFS), _F32),
    "predicted_goal": ArraySpec(("E", "T", 3), _F32),
    "object_true": ArraySpec(("E", "T", 3), _F32),
    # per episode
    "goal_pos": ArraySpec(("E", 3), _F32),
    "true_goal": ArraySpec(("E", 3), _F32),
    "true_goal_rel": ArraySpec(("E", 3), _F32),
    **{name: ArraySpec(("E",), _F64) for name in PARAM_NAMES},
    "success": ArraySpec(("E",), "bool"),
    "seed": ArraySpec(("E",), "int64"),
    "run": ArraySpec(("E",), "int32"),
    "round": ArraySpec(("E",), "int32"),
    "beta": ArraySpec(("E",), _F64),
    "params_json": ArraySpec(("E",), _STR),  # EpisodeParams.to_json() as JSON
    "noise_json": ArraySpec(("E",), _STR),  # the ContractNoise amplitudes as JSON (drawn from default_rng([seed, 5]))
    "timing": ArraySpec(("E",), _STR),  # "lockstep" or "jitter" (TimingJitter's defaults)
    # global
    "thrower_base": ArraySpec((3,), _F32),
}


def check_arrays(arrays: dict[str, np.ndarray], schema: dict[str, ArraySpec], source: str) -> dict[str, int]:
    """Check presence, dtype, shape (symbolic dims consistent across arrays) and finiteness of every
    array of ``schema``; return the symbolic dims' sizes. Errors name the array and ``source``."""
    dims: dict[str, int] = {}
    for name, spec in schema.items():
        if name not in arrays:
            raise InputError(f"{source}: array {name!r} missing")
        a = arrays[name]
        if (a.dtype.kind != "U") if spec.dtype == _STR else (a.dtype != np.dtype(spec.dtype)):
            raise InputError(f"{source}: array {name!r} has dtype {a.dtype}, expected {spec.dtype}")
        want = "(" + ", ".join(str(d) for d in spec.shape) + ("," if len(spec.shape) == 1 else "") + ")"
        ok = a.ndim == len(spec.shape)
        for d, n in zip(spec.shape, a.shape):
            if isinstance(d, str):
                ok = ok and dims.setdefault(d, n) == n
            else:
                ok = ok and d == n
        if not ok:
            sizes = ", ".join(f"{k} = {v}" for k, v in dims.items())
            raise InputError(f"{source}: array {name!r} has shape {a.shape}, expected {want}" + (f" with {sizes}" if sizes else ""))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(f"{source}: array {name!r} has a non-finite value at index {np.argwhere(~np.isfinite(a))[0].tolist()}")
    for d, n in dims.items():
        if n == 0:
            raise InputError(f"{source}: no {'episodes' if d == 'E' else 'steps'} ({d} = 0)")
    return dims


@dataclass(frozen=True)
class Demonstrations:
    """A loaded, checked dataset: ``arrays`` as in :data:`SCHEMA`; ``source`` names it in errors."""

    arrays: dict[str, np.ndarray]
    source: str = "<memory>"

    def __post_init__(self):
        check_arrays(self.arrays, SCHEMA, self.source)
        run = self.arrays["run"]
        if np.any(np.diff(run) < 0):
            raise InputError(f"{self.source}: array 'run' is not in recording order (it decreases at episode "
                             f"{int(np.argmax(np.diff(run) < 0)) + 1})")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def episodes(self) -> int:
        """Number of episodes (E)."""
        return int(self.arrays["run"].shape[0])

    @property
    def steps(self) -> int:
        """Control steps per episode (T)."""
        return int(self.arrays["thrower_q"].shape[1])

    def params(self, e: int) -> EpisodeParams:
        """Episode ``e``'s parameters, all of them (from ``params_json``)."""
        return EpisodeParams.from_json(json.loads(str(self.arrays["params_json"][e])))

    def episode_log(self, e: int) -> dict[str, np.ndarray]:
        """Episode ``e`` as a replay log (``handover contract replay`` IN format), checked by
        :func:`~handover.runtime.replay.check_log`. Replayed alone it starts from an empty frame stack."""
        a = self.arrays
        log = {"thrower_q": a["thrower_q"][e], "catcher_q": a["catcher_q"][e], "object_pos": a["object_pos"][e],
               "goal_pos": a["goal_pos"][e], "actions": a["actions"][e], "predicted_goal": a["predicted_goal"][e]}
        check_log(log, source=f"{self.source} episode {e}")
        return log


def from_episodes(logs: Sequence[EpisodeLog], episodes: Sequence[dict], thrower_base) -> Demonstrations:
    """Assemble a dataset from the controller's per-episode logs and per-episode values: ``object_true``
    (T, 3), ``goal_pos``, ``true_goal``, the EpisodeParams fields, ``success``, ``seed``, ``run``,
    ``round``, ``beta`` (``true_goal_rel`` is computed)."""
    base = np.asarray(thrower_base, np.float32).reshape(3)
    arrays = {}
    for name, spec in SCHEMA.items():
        if name == "thrower_base":
            arrays[name] = base
        elif name == "true_goal_rel":
            arrays[name] = np.asarray([np.asarray(ep["true_goal"], np.float64) - base for ep in episodes], np.float32)
        elif spec.shape[:2] == ("E", "T") and name != "object_true":
            arrays[name] = np.stack([getattr(log, name) for log in logs]).astype(spec.dtype)
        elif name == "object_true":
            arrays[name] = np.stack([np.asarray(ep[name]) for ep in episodes]).astype(spec.dtype)
        elif spec.dtype == _STR:
            arrays[name] = np.asarray([str(ep[name]) for ep in episodes])
        else:
            arrays[name] = np.asarray([ep[name] for ep in episodes], dtype=spec.dtype)
    return Demonstrations(arrays)


def concat(datasets: Sequence[Demonstrations]) -> Demonstrations:
    """Episodes of ``datasets`` one after another; ``run`` ids are renumbered so that every
    dataset's runs stay separate (each starts from a fresh ContractState)."""
    if not datasets:
        raise InputError("concat: no datasets")
    base = datasets[0]["thrower_base"]
    arrays: dict[str, list] = {name: [] for name in SCHEMA}
    offset = 0
    for ds in datasets:
        if not np.array_equal(ds["thrower_base"], base):
            raise InputError(f"{ds.source}: thrower_base {ds['thrower_base'].tolist()} differs from {base.tolist()} of {datasets[0].source}")
        for name in SCHEMA:
            arrays[name].append(ds[name] + offset if name == "run" else ds[name])
        offset = int(arrays["run"][-1].max()) + 1
    out = {name: np.concatenate(parts) for name, parts in arrays.items() if name != "thrower_base"}
    out["thrower_base"] = base
    return Demonstrations(out)


def save(ds: Demonstrations, path: str | Path) -> Path:
    """Write ``ds`` (and ``format``) to one compressed ``.npz`` file, atomically."""
    with atomic_write(path) as f:
        np.savez_compressed(f, format=np.array(DATASET_FORMAT), **ds.arrays)
    return Path(path)


def load(path: str | Path) -> Demonstrations:
    """Read and check a dataset written by :func:`save`; errors name the file and the array."""
    path = Path(path)
    arrays = load_npz(path, "demonstrations file")
    fmt = arrays.pop("format", None)
    if fmt is None:
        raise InputError(f"{path}: array 'format' missing (is this a demonstrations dataset?)")
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != DATASET_FORMAT:
        raise InputError(f"{path}: format {fmt.tolist()!r}, expected {DATASET_FORMAT!r}")
    unknown = sorted(set(arrays) - set(SCHEMA))
    if unknown:
        raise InputError(f"{path}: unknown arrays {unknown} for format {DATASET_FORMAT!r}")
    return Demonstrations(arrays, source=str(path))


# --------------------------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordConfig:
    """One recording run: ``episodes`` episodes of ``steps`` control steps (default: the cell's)."""

    episodes: int
    seed: int = 0  # the run's numpy Generator seed; episode seeds are drawn from it
    steps: Optional[int] = None
    randomize: str = "training"  # "none" or "training": the original's training randomization (EpisodeParams.sample_training and its contract noise)
    timing: str = "jitter"  # "lockstep" or "jitter" (TimingJitter: commands 0-20 ms late, readings 0-20 ms old)
    goal: Optional[tuple[float, float, float]] = None  # world, m; default: drawn per episode from the cell config's goal
    beta: float = 0.0  # DAgger: probability per step that the learner's action is executed
    round: int = 0  # DAgger round stored with the episodes (0 = expert demonstrations)

    def __post_init__(self):
        if self.episodes < 1:
            raise ValueError(f"RecordConfig.episodes must be >= 1, got {self.episodes}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"RecordConfig.steps must be >= 1, got {self.steps}")
        if self.randomize not in ("none", "training"):
            raise ValueError(f"RecordConfig.randomize must be 'none' or 'training', got {self.randomize!r}")
        if self.timing not in ("lockstep", "jitter"):
            raise ValueError(f"RecordConfig.timing must be 'lockstep' or 'jitter', got {self.timing!r}")


def default_judge(twin) -> bool:
    """``handover.sim_twin.success.judge(twin).success``."""
    from handover.sim_twin.success import judge

    return bool(judge(twin).success)


def record(
    cfg: CellConfig,
    expert: ActionPolicy,
    rec: RecordConfig,
    learner: Optional[ActionPolicy] = None,
    predict_goal: Optional[GoalFn] = None,
    judge: Optional[JudgeFn] = None,
    progress: bool = True,
    desc: str = "recording",
    on_episode: Optional[Callable[[int, EpisodeLog], None]] = None,
) -> Demonstrations:
    """Record ``rec.episodes`` episodes in a fresh MuJoCo twin, in one run (one ContractState).

    Episode ``e``: seed ``s`` drawn from ``default_rng(rec.seed)``; with ``rec.randomize ==
    "training"`` params from ``EpisodeParams.sample_training(default_rng([s, 0]))`` and the contract's
    training noise, else nominal params and the history noise only; the twin's camera noise reseeded
    with ``default_rng([s, 1])``; DAgger mixing from ``default_rng([s, 2])``; the contract's noise
    from ``default_rng([s, 5])`` (so that :func:`build_actor_inputs` draws it again exactly);
    the timing (``rec.timing``) from ``default_rng([s, 3])``; the goal (unless ``rec.goal`` fixes it)
    from ``default_rng([s, 4])``. ``judge(twin) -> bool`` decides
    success at the episode end (default :func:`default_judge`). ``on_episode(e, log)`` sees each
    episode's log, including the live actor inputs. Progress goes to stderr (tqdm).
    """
    from tqdm import tqdm

    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.episode import run_episode
    from handover.sim_twin.twin import TimingJitter, Twin

    judge = judge or default_judge
    spec = ContractSpec.from_config(cfg)
    steps = rec.steps or cfg.episode_steps
    twin = Twin(cfg, seed=rec.seed)
    devices = TwinDevices.create(twin)
    devices.bring_up()
    noise = ContractNoise.training(cfg.history_noise) if rec.randomize == "training" else ContractNoise(history=cfg.history_noise)
    controller = ActionController(spec, expert, cfg.goal.center, cfg.object.start_position, twin=twin,
                                  predict_goal=predict_goal, learner=learner, beta=rec.beta, noise=noise)
    seeds = np.random.default_rng(rec.seed).integers(0, 2**63 - 1, size=rec.episodes, dtype=np.int64)
    logs, episodes = [], []
    bar = tqdm(total=rec.episodes, desc=desc, file=sys.stderr, disable=not progress, unit="ep")
    for e, s in enumerate(seeds):
        s = int(s)
        rng = lambda k: np.random.default_rng([s, k])  # noqa: E731
        params = EpisodeParams.sample_training(rng(0), twin.thrower_links) if rec.randomize == "training" else EpisodeParams()
        twin.camera.rng = rng(1)
        twin.reset(params)
        twin.set_timing(TimingJitter() if rec.timing == "jitter" else None, rng(3))
        goal = np.asarray(rec.goal if rec.goal is not None else cfg.goal.draw(rng(4)), np.float64)
        controller.begin_episode(params, rng(2), goal=goal, noise_rng=rng(5))
        records = run_episode(devices, controller, steps)
        log = controller.episode_log()
        ok = bool(judge(twin))
        logs.append(log)
        episodes.append({
            "object_true": np.stack([r.object_position for r in records]).astype(np.float32),
            "goal_pos": goal, "true_goal": records[-1].object_position, "success": ok, "seed": s, "run": 0,
            "round": rec.round, "beta": rec.beta, **{n: getattr(params, n) for n in PARAM_NAMES},
            "params_json": json.dumps(params.to_json()), "timing": rec.timing,
            "noise_json": json.dumps(dataclasses.asdict(noise)),
        })
        if on_episode is not None:
            on_episode(e, log)
        bar.update(1)
        bar.set_postfix(success=f"{np.mean([ep['success'] for ep in episodes]):.0%}")
    bar.close()
    return from_episodes(logs, episodes, spec.thrower_base)


# --------------------------------------------------------------------------------------------
# training samples
# --------------------------------------------------------------------------------------------


def _check_cell(ds: Demonstrations, spec: ContractSpec) -> None:
    if not np.allclose(ds["thrower_base"], spec.thrower_base, atol=1e-6):
        raise InputError(f"{ds.source}: recorded with thrower_base {ds['thrower_base'].tolist()}, "
                         f"this cell's is {spec.thrower_base.tolist()}")


def histories(ds: Demonstrations) -> np.ndarray:
    """(E, T, 60) the goal-estimator input at every step: the 20-entry object history (relative to
    the thrower base, oldest first, zeroed at each episode start), as ``ContractState.push_object``."""
    out = np.zeros((ds.episodes, ds.steps, HISTORY_LEN * 3), np.float32)
    hist = ObjectHistory(ds["thrower_base"])
    for e in range(ds.episodes):
        hist.reset()
        for t in range(ds.steps):
            hist.push(ds["object_pos"][e, t])
            out[e, t] = hist.flat()
    return out


@dataclass(frozen=True)
class ActorInputs:
    """The actors' inputs rebuilt from a dataset, (E, T, ...)."""

    thrower: np.ndarray  # (E, T, 450)
    catcher: np.ndarray  # (E, T, 450)
    predicted_goal_rel: np.ndarray  # (E, T, 3) the goal-estimator outputs used, relative to the thrower base, m


def build_actor_inputs(ds: Demonstrations, spec: ContractSpec, predict_goal: Optional[GoalFn]) -> ActorInputs:
    """Replay every run through a fresh :class:`ContractState` in recording order (frame stack carried
    over between the episodes of a run, like at recording and deployment), executing the logged
    actions, with the predicted goal ``predict_goal(history)`` (None: 0, relative, as recorded
    without a goal estimator). The replayed targets must equal the logged ones (else the dataset
    does not belong to this cell: :class:`InputError`). The contract's noise of each episode
    (``noise_json``) is drawn again from ``default_rng([seed, 5])`` in the recording's order, so the
    rebuilt inputs carry the noise the live ones had."""
    _check_cell(ds, spec)
    hist = histories(ds)
    E, T = ds.episodes, ds.steps
    if predict_goal is None:
        pred = np.zeros((E, T, 3), np.float32)
    else:
        pred = np.asarray(predict_goal(hist.reshape(E * T, -1)), np.float32).reshape(E, T, 3)
    thrower = np.zeros((E, T, AGENT_INPUT_SIZE), np.float32)
    catcher = np.zeros((E, T, AGENT_INPUT_SIZE), np.float32)
    a = ds.arrays
    state: Optional[ContractState] = None
    for e in range(E):
        if state is None or a["run"][e] != a["run"][e - 1]:
            state = ContractState(spec)
        state.set_noise(ContractNoise(**json.loads(str(a["noise_json"][e]))), np.random.default_rng([int(a["seed"][e]), 5]))
        state.reset()
        for t in range(T):
            state.push_object(a["object_pos"][e, t])
            thrower[e, t], catcher[e, t] = state.inputs(a["thrower_q"][e, t], a["catcher_q"][e, t], a["goal_pos"][e], pred[e, t])
            targets = state.apply(a["actions"][e, t])
            if not np.allclose(targets, a["targets"][e, t], atol=1e-5):
                bad = int(np.argmax(np.abs(targets - a["targets"][e, t])))
                raise InputError(f"{ds.source}: array 'targets' at episode {e}, step {t}, joint {bad} is "
                                 f"{a['targets'][e, t, bad]:.6g}, the contract gives {targets[bad]:.6g} from the logged actions")
    return ActorInputs(thrower, catcher, pred)


@dataclass(frozen=True)
class Samples:
    """Training pairs, flattened over episodes and steps; ``groups`` (N,) is the episode index."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def _groups(ds: Demonstrations) -> np.ndarray:
    return np.repeat(np.arange(ds.episodes), ds.steps)


def actor_samples(ds: Demonstrations, inputs: ActorInputs) -> tuple[Samples, Samples]:
    """(thrower, catcher) behaviour-cloning pairs: rebuilt input (450) -> expert action (22)."""
    n = ds.episodes * ds.steps
    labels = ds["expert_actions"].reshape(n, DOFS)
    g = _groups(ds)
    return (Samples(inputs.thrower.reshape(n, -1), labels[:, :SIDE_DOFS], g),
            Samples(inputs.catcher.reshape(n, -1), labels[:, SIDE_DOFS:], g))


def goal_samples(ds: Demonstrations) -> Samples:
    """Goal-estimator pairs at every step: history (60) -> the episode's true goal relative to the thrower base (3)."""
    n = ds.episodes * ds.steps
    y = np.repeat(ds["true_goal_rel"], ds.steps, axis=0)
    return Samples(histories(ds).reshape(n, -1), y, _groups(ds))


def property_windows(ds: Demonstrations) -> np.ndarray:
    """(E, T, 940): at every step the window of the last 20 rows ``[object_rel (3), thrower_q (22),
    catcher_q (22)]``, oldest first, zero rows before the episode start (PropertyWindow)."""
    k, size = PROPERTY_HISTORY_LEN, PROPERTY_STEP_SIZE
    out = np.zeros((ds.episodes, ds.steps, k * size), np.float32)
    window = PropertyWindow(size, k)
    rows = np.concatenate([ds["object_pos"] - ds["thrower_base"], ds["thrower_q"], ds["catcher_q"]], axis=2)
    for e in range(ds.episodes):
        window.reset()
        for t in range(ds.steps):
            out[e, t] = window.push(rows[e, t])
    return out


def property_samples(ds: Demonstrations, labels: Sequence[str] = ("mass_factor",), first_step: int = 0) -> Samples:
    """Property-estimator pairs, one window ending at every step from ``first_step`` on:
    window (940) -> the episode's factors."""
    if not 0 <= first_step < ds.steps:
        raise InputError(f"property_samples: first_step {first_step} is outside the episode's steps 0..{ds.steps - 1}")
    n = ds.episodes * ds.steps
    y = np.stack([np.repeat(ds[name], ds.steps) for name in labels], axis=1).astype(np.float32)
    keep = np.tile(np.arange(ds.steps) >= first_step, ds.episodes)
    return Samples(property_windows(ds).reshape(n, -1)[keep], y[keep], _groups(ds)[keep])


__all__ = [
    "ActionController",
    "ActorInputs",
    "ContractInputs",
    "DATASET_FORMAT",
    "Demonstrations",
    "EpisodeLog",
    "LearnerPolicy",
    "RecordConfig",
    "SCHEMA",
    "Samples",
    "actor_samples",
    "build_actor_inputs",
    "check_arrays",
    "concat",
    "goal_samples",
    "histories",
    "load",
    "property_samples",
    "property_windows",
    "record",
    "save",
]
