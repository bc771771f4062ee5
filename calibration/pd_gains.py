"""PD gain calibration of the twin (the autotune of the humanoid sim-to-real recipe, per joint group).

From a recording of the cell (PD position targets sent and joint positions measured, at the control
rate), search per joint group a stiffness factor and a damping factor of the twin's nominal PD gains
(the cell config's ``twin`` section) so that the twin, driven open loop by the recorded targets from
the recorded start, tracks the recorded joint positions best (lowest mean squared error, rad^2).

Joint groups: ``thrower/arm``, ``thrower/hand``, ``catcher/arm``, ``catcher/hand`` (a joint's group is
its side and ``hand`` for the Allegro joints ``<side>/joint_N.M``, else ``arm``).

Search (:func:`search_gains`): the recipe's one-shot random search (K parameter sets around the nominal,
keep the lowest MSE) iterated as a cross-entropy method in log space. The groups are searched
*separably*: every simulated candidate sets all groups' factors at once and each group keeps the
candidates with its own lowest MSE, so one rollout serves four searches (the arms and hands of the two
robots barely couple through the tracking error). The best candidate seen per group is returned.

Layering: this module never runs the twin (``calibration`` does not import ``handover.sim_twin``).
The caller injects ``simulate(factors, recording) -> positions``;
:mod:`handover.sim_twin.gain_search` provides it for the MuJoCo twin.

Files:

- recording: a bag of the cell's topics (:func:`recording_from_bag`), or
  ``.npz`` (:func:`save_recording` / :func:`load_recording`): ``joint_names`` (J,),
  ``period_s`` () s, a whole number of the twin's physics steps (the control period; a bag: one physics
  step), ``commands`` (T, J) rad, the targets sent at step t; ``positions``
  (T+1, J) rad, measured at step t before the command (row 0: the start) and after the last step,
  NaN where not measured (row 0 never); optional ``velocities`` (T+1, J) rad/s (row 0 sets the
  replay's start velocity; default 0).
- gains (``<calibration_dir>/twin_pd_gains.yaml``, :func:`write_gains` / :func:`load_gains`)::

    kind: twin_pd_gains
    groups:                      # factors of the cell config's twin gains; every group optional (1.0)
      thrower/arm: {stiffness_factor: 1.03, damping_factor: 0.96}
      ...
    fit: {...}                   # optional, how the factors were found (MSE before/after, rad^2)
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import yaml

from handover.runtime.errors import InputError
from handover.runtime.files import load_npz

GROUPS = ("thrower/arm", "thrower/hand", "catcher/arm", "catcher/hand")
GAINS_FILE = "twin_pd_gains.yaml"
GAINS_KIND = "twin_pd_gains"
FACTOR_RANGE = (0.05, 20.0)  # accepted factors in a gains file


class GainCalibrationError(ValueError):
    """A recording or gains file is missing or malformed; the message names the file, key and value."""


def joint_group(name: str) -> str:
    """The joint group of a contract joint name (``thrower/joint3`` -> ``thrower/arm``)."""
    side, _, joint = name.partition("/")
    if side not in ("thrower", "catcher") or not joint:
        raise ValueError(f"not a cell joint name: {name!r} (expected thrower/... or catcher/...)")
    return f"{side}/{'hand' if joint.startswith('joint_') else 'arm'}"


@dataclass(frozen=True)
class GainFactors:
    """Per joint group: factors of the twin's nominal PD stiffness and damping (dimensionless).
    Groups not given are 1.0."""

    stiffness: Mapping[str, float] = field(default_factory=dict)
    damping: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for kind in ("stiffness", "damping"):
            for g, v in getattr(self, kind).items():
                if g not in GROUPS:
                    raise ValueError(f"GainFactors.{kind}: unknown joint group {g!r}; expected one of {GROUPS}")
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                    raise ValueError(f"GainFactors.{kind}[{g!r}] must be a positive number, got {v!r}")

    def kp(self, group: str) -> float:
        return float(self.stiffness.get(group, 1.0))

    def kd(self, group: str) -> float:
        return float(self.damping.get(group, 1.0))

    @staticmethod
    def from_log(log_kp: Sequence[float], log_kd: Sequence[float], groups: Sequence[str] = GROUPS) -> "GainFactors":
        return GainFactors({g: float(np.exp(v)) for g, v in zip(groups, log_kp)},
                           {g: float(np.exp(v)) for g, v in zip(groups, log_kd)})

    def to_doc(self) -> dict:
        return {g: {"stiffness_factor": round(self.kp(g), 6), "damping_factor": round(self.kd(g), 6)} for g in GROUPS}


@dataclass(frozen=True)
class Recording:
    """Recorded targets and joint states of a run (module doc: shapes and units)."""

    joint_names: tuple[str, ...]
    period_s: float
    commands: np.ndarray  # (T, J) rad
    positions: np.ndarray  # (T+1, J) rad
    velocities: Optional[np.ndarray] = None  # (T+1, J) rad/s

    def __post_init__(self):
        t, j = np.shape(self.commands)[0], len(self.joint_names)
        if np.shape(self.commands) != (t, j) or t < 2:
            raise ValueError(f"Recording.commands: expected shape (T>=2, {j}), got {np.shape(self.commands)}")
        for key in ("positions", "velocities"):
            arr = getattr(self, key)
            if arr is not None and np.shape(arr) != (t + 1, j):
                raise ValueError(f"Recording.{key}: expected shape ({t + 1}, {j}), got {np.shape(arr)}")
        if not np.isfinite(self.commands).all():
            raise ValueError("Recording.commands: every value must be finite")
        for key in ("positions", "velocities"):  # rows after the first: NaN where not measured
            arr = getattr(self, key)
            if arr is not None and (not np.isfinite(arr[0]).all() or np.isinf(arr).any()):
                raise ValueError(f"Recording.{key}: the first row must be finite, the others finite or NaN")
        for name in self.joint_names:
            joint_group(name)

    @property
    def steps(self) -> int:
        return int(self.commands.shape[0])

    def window(self, start_s: float = 0.0, end_s: Optional[float] = None) -> "Recording":
        """The steps from ``start_s`` (the first step from there whose position is measured) to
        ``end_s`` (s from the recording's start)."""
        a = int(round(start_s / self.period_s))
        measured = np.flatnonzero(np.isfinite(self.positions[a:]).all(axis=1)
                                  & (True if self.velocities is None else np.isfinite(self.velocities[a:]).all(axis=1)))
        a += int(measured[0]) if len(measured) else 0
        b = self.steps if end_s is None else min(self.steps, int(round(end_s / self.period_s)))
        if not 0 <= a < b - 1:
            raise ValueError(f"empty window {start_s}..{end_s} s of a {self.steps * self.period_s:.2f} s recording")
        vel = None if self.velocities is None else self.velocities[a:b + 1]
        return Recording(self.joint_names, self.period_s, self.commands[a:b], self.positions[a:b + 1], vel)


def save_recording(path: str | Path, rec: Recording) -> Path:
    arrays = {"joint_names": np.array(rec.joint_names), "period_s": np.float64(rec.period_s),
              "commands": rec.commands, "positions": rec.positions}
    if rec.velocities is not None:
        arrays["velocities"] = rec.velocities
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def recording_from_bag(path: str | Path, cfg) -> Recording:
    """The recording of a bag of cell config ``cfg``'s topics (:mod:`handover.runtime.recorder`): the
    run sampled on the twin's physics step (each command from the first step at or after its stamp,
    as the twin node applies it) from its first joint state
    (:meth:`handover.runtime.recorded_run.RecordedRun.sampled`, as the open-loop replay drives the twin)."""
    from handover.runtime.recorded_run import load_run

    try:
        run = load_run(path, cfg)
        s = run.sampled(cfg.twin.timestep_s, run.t0, float(run.js_t[-1]))
    except InputError as exc:
        raise GainCalibrationError(str(exc)) from None
    return Recording(tuple(run.joint_names), cfg.twin.timestep_s, s.commands, s.positions, s.velocities)


def is_bag(path: str | Path) -> bool:
    """A rosbag2 bag folder or an .mcap file (else: a recording .npz)."""
    return Path(path).is_dir() or Path(path).suffix == ".mcap"


def load_recording(path: str | Path, cfg=None) -> Recording:
    """A recording written by :func:`save_recording`, or with ``cfg`` a bag (:func:`recording_from_bag`);
    errors name the file and what is wrong."""
    if cfg is not None and is_bag(path):
        return recording_from_bag(path, cfg)
    path = Path(path)
    try:
        z = load_npz(path, "recording")
    except InputError as exc:
        raise GainCalibrationError(str(exc)) from None
    missing = [k for k in ("joint_names", "period_s", "commands", "positions") if k not in z]
    if missing:
        raise GainCalibrationError(f"{path}: missing arrays {missing} (format: handover.calibration.pd_gains)")
    try:
        return Recording(tuple(str(s) for s in z["joint_names"]), float(z["period_s"]),
                         np.asarray(z["commands"], float), np.asarray(z["positions"], float),
                         np.asarray(z["velocities"], float) if "velocities" in z else None)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, GainCalibrationError):
            raise
        raise GainCalibrationError(f"{path}: not a gain-calibration recording: {exc}") from None


def group_indices(joint_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Column indices of each joint group present in ``joint_names``."""
    groups = [joint_group(n) for n in joint_names]
    return {g: np.flatnonzero([x == g for x in groups]) for g in GROUPS if g in groups}


def tracking_mse(simulated: np.ndarray, rec: Recording) -> dict[str, float]:
    """Per group: mean over steps 1..T and the group's joints of (simulated - recorded position)^2, rad^2."""
    err2 = (np.asarray(simulated)[1:] - rec.positions[1:]) ** 2
    return {g: float(np.nanmean(err2[:, idx])) for g, idx in group_indices(rec.joint_names).items()}


Simulate = Callable[[GainFactors, Recording], np.ndarray]  # -> simulated positions (T+1, J), rad


@dataclass(frozen=True)
class SearchConfig:
    """Cross-entropy search in log factor space. ``samples`` candidates per iteration (the first of
    the first iteration is the start point), ``elite`` kept per group, ``iterations`` rounds (1 =
    the recipe's one-shot random search); ``init_std`` the start standard deviation of log factors
    (0.4: x/÷1.5), ``min_std`` its floor; ``start`` the factors to search around (nominal: 1.0).
    ``refine``: then Levenberg-Marquardt iterations on the position residuals of all groups jointly
    (each group normalised to count equally; Jacobian by finite differences, +1 % per factor: one
    rollout per factor), a step kept only if the residual falls."""

    samples: int = 16
    elite: int = 4
    iterations: int = 4
    refine: int = 4  # Levenberg-Marquardt polish after the random search (~2G+1 rollouts each; 0: none)
    init_std: float = 0.4
    min_std: float = 0.01
    seed: int = 0
    start: GainFactors = field(default_factory=GainFactors)

    def __post_init__(self):
        if not (self.samples >= 2 and 1 <= self.elite < self.samples and self.iterations >= 1):
            raise ValueError(f"SearchConfig: need samples >= 2, 1 <= elite < samples, iterations >= 1; got {self}")
        if not (self.init_std > 0 and self.min_std > 0):
            raise ValueError(f"SearchConfig: init_std and min_std must be > 0, got {self.init_std}, {self.min_std}")


@dataclass
class SearchResult:
    factors: GainFactors
    mse_nominal: dict[str, float]  # rad^2, with the start factors
    mse_calibrated: dict[str, float]  # rad^2, with ``factors``
    rollouts: int
    seconds: float
    history: list[dict[str, float]]  # best MSE per group after each iteration

    def improvement(self) -> dict[str, float]:
        """Per group: how many times smaller the calibrated MSE is than the nominal one."""
        return {g: self.mse_nominal[g] / max(self.mse_calibrated[g], 1e-300) for g in self.mse_nominal}

    def to_doc(self) -> dict:
        return {"mse_nominal_rad2": {g: float(f"{v:.6g}") for g, v in self.mse_nominal.items()},
                "mse_calibrated_rad2": {g: float(f"{v:.6g}") for g, v in self.mse_calibrated.items()},
                "rollouts": self.rollouts, "seconds": round(self.seconds, 2)}


def _progress_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def search_gains(rec: Recording, simulate: Simulate, cfg: SearchConfig = SearchConfig(),
                 progress: Optional[Callable[[str], None]] = _progress_stderr) -> SearchResult:
    """Find per-group gain factors minimising the tracking MSE (module doc). ``progress`` gets one
    line per iteration (None: quiet)."""
    t0 = time.monotonic()
    groups = list(group_indices(rec.joint_names))
    rng = np.random.default_rng(cfg.seed)
    mean = np.array([[np.log(cfg.start.kp(g)), np.log(cfg.start.kd(g))] for g in groups])  # (G, 2)
    std = np.full_like(mean, cfg.init_std)
    best_x = mean.copy()
    best = {g: math.inf for g in groups}
    nominal: dict[str, float] = {}
    history: list[dict[str, float]] = []
    rollouts = 0
    for it in range(cfg.iterations):
        xs = mean[None] + std[None] * rng.standard_normal((cfg.samples, *mean.shape))
        if it == 0:
            xs[0] = mean
        scores = np.empty((cfg.samples, len(groups)))
        for k, x in enumerate(xs):
            mse = tracking_mse(simulate(GainFactors.from_log(x[:, 0], x[:, 1], groups), rec), rec)
            rollouts += 1
            scores[k] = [mse[g] for g in groups]
            if it == 0 and k == 0:
                nominal = dict(mse)
        for gi, g in enumerate(groups):
            order = np.argsort(scores[:, gi])
            if scores[order[0], gi] < best[g]:
                best[g] = float(scores[order[0], gi])
                best_x[gi] = xs[order[0], gi]
            elite = xs[order[:cfg.elite], gi]
            mean[gi] = elite.mean(axis=0)
            std[gi] = np.maximum(elite.std(axis=0), cfg.min_std)
        history.append(dict(best))
        if progress:
            progress(f"gain search {it + 1}/{cfg.iterations} ({rollouts} rollouts, {time.monotonic() - t0:.1f} s): "
                     + ", ".join(f"{g} kp x{np.exp(best_x[i, 0]):.3f} kd x{np.exp(best_x[i, 1]):.3f} "
                                 f"MSE {best[g]:.3g}" for i, g in enumerate(groups)))
    if cfg.refine:
        best_x, rollouts = _refine(rec, simulate, groups, best_x, cfg.refine, rollouts, progress, t0)
    factors = GainFactors.from_log(best_x[:, 0], best_x[:, 1], groups)
    # The separable search scored each group with the others' factors of its own candidate: re-score
    # the combination once (the number reported as "after").
    calibrated = tracking_mse(simulate(factors, rec), rec)
    rollouts += 1
    return SearchResult(factors, nominal, calibrated, rollouts, time.monotonic() - t0, history)


def _refine(rec: Recording, simulate: Simulate, groups: list[str], x: np.ndarray, iterations: int,
            rollouts: int, progress, t0: float) -> tuple[np.ndarray, int]:
    """Levenberg-Marquardt on all groups' log factors jointly (finite-difference Jacobian, one
    rollout per parameter); each group's residuals weighted so that every group counts equally."""
    idx = group_indices(rec.joint_names)
    h = 0.01
    lam = 1e-3

    measured = {g: np.isfinite(rec.positions[1:, idx[g]]) for g in groups}

    def run(xs: np.ndarray) -> np.ndarray:
        sim = simulate(GainFactors.from_log(xs[:, 0], xs[:, 1], groups), rec)
        return np.concatenate([(sim[1:, idx[g]] - rec.positions[1:, idx[g]])[measured[g]] * w[g] for g in groups])

    w = {g: 1.0 for g in groups}
    r0 = run(x)
    n0 = 0
    for g in groups:  # equal weights: each group's residual normalised by its RMS at the start
        n = int(measured[g].sum())
        w[g] = 1.0 / max(float(np.sqrt((r0[n0:n0 + n] ** 2).mean())), 1e-9)
        n0 += n
    x = x.copy()
    r0 = run(x)
    rollouts += 2
    for it in range(iterations):
        jac = np.empty((r0.size, x.size))
        for p in range(x.size):
            xp = x.copy().ravel()
            xp[p] += h
            jac[:, p] = (run(xp.reshape(x.shape)) - r0) / h
            rollouts += 1
        a = jac.T @ jac
        for _ in range(4):
            step = -np.linalg.solve(a + lam * np.diag(np.diag(a) + 1e-12), jac.T @ r0)
            step = np.clip(step, -0.3, 0.3).reshape(x.shape)
            r1 = run(x + step)
            rollouts += 1
            if r1 @ r1 < r0 @ r0:
                x, r0, lam = x + step, r1, max(lam / 3, 1e-7)
                break
            lam *= 10
        if progress:
            progress(f"gain refine {it + 1}/{iterations} ({rollouts} rollouts, {time.monotonic() - t0:.1f} s): "
                     + ", ".join(f"{g} kp x{np.exp(x[i, 0]):.3f} kd x{np.exp(x[i, 1]):.3f}" for i, g in enumerate(groups)))
    return x, rollouts


# -- the gains file ---------------------------------------------------------------------------------


def write_gains(path: str | Path, factors: GainFactors, fit: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the gains file (module doc); ``fit``: how they were found (free-form numbers)."""
    doc: dict[str, Any] = {"kind": GAINS_KIND, "groups": factors.to_doc()}
    if fit:
        doc["fit"] = dict(fit)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Factors of the twin's nominal PD gains (cell config twin section), per joint group; "
                    "handover.calibration.pd_gains\n" + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def load_gains(path: str | Path) -> GainFactors:
    """The factors in a gains file; any problem raises :class:`GainCalibrationError` naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise GainCalibrationError(f"{path}: twin PD gains file not found (handover calibrate gains writes it)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GainCalibrationError(f"{path}: cannot read as YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict) or raw.get("kind") != GAINS_KIND:
        raise GainCalibrationError(f"{path}: kind: expected {GAINS_KIND!r} (got {raw.get('kind') if isinstance(raw, dict) else raw!r})")
    unknown = set(raw) - {"kind", "groups", "fit"}
    if unknown:
        raise GainCalibrationError(f"{path}: unknown keys {sorted(unknown)}; expected kind, groups, fit")
    groups = raw.get("groups") or {}
    if not isinstance(groups, dict):
        raise GainCalibrationError(f"{path}: groups: expected a mapping (got {groups!r})")
    kp, kd = {}, {}
    for g, entry in groups.items():
        if g not in GROUPS:
            raise GainCalibrationError(f"{path}: groups.{g}: unknown joint group; expected some of {list(GROUPS)}")
        if not isinstance(entry, dict) or set(entry) - {"stiffness_factor", "damping_factor"}:
            raise GainCalibrationError(f"{path}: groups.{g}: expected {{stiffness_factor, damping_factor}} (got {entry!r})")
        for key, out in (("stiffness_factor", kp), ("damping_factor", kd)):
            v = entry.get(key, 1.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (FACTOR_RANGE[0] <= v <= FACTOR_RANGE[1]):
                raise GainCalibrationError(f"{path}: groups.{g}.{key}: expected a number in {list(FACTOR_RANGE)} (got {v!r})")
            out[g] = float(v)
    return GainFactors(kp, kd)
