"""``handover eval``: success rate of a policy bundle in the MuJoCo twin, per object mass factor,
under the original's training randomization and real-time timing if asked, and the error of the
bundle's mass estimate.

Every episode runs the deployed path and the deployed protocol: the ONNX bundle
(:class:`PolicyNetworks`) inside a :class:`PolicyController`, driven by the
:class:`~handover.runtime.episode_sequencer.EpisodeSequencer` that the ROS 2 policy node runs
(blend to the reset pose from where the last episode ended, place the object, settle, dry step, the
policy steps, one period holding), reading and commanding the twin's devices (:class:`TwinDevices`,
every command through the command gate) in lockstep with the physics
(:func:`~handover.sim_twin.episode.run_protocol_episode`). No expert, no privileged state: the
policy sees the joint readings and the simulated D435 tracker (noise, latency, dropout as
configured), with the contract's history noise (``history_noise`` in the cell config).

``randomize``: ``none`` (nominal physics, the object's mass factor as given) or ``training`` (the
original's training randomization, contract document: object mass x U(0.5, 1.5) unless mass factors
are given, friction x U(0.7, 1.3), scale x U(0.95, 1.05); the thrower's per-joint PD gains, limits,
link masses and friction; gravity + N(0, 0.4); observation noise N(0, 0.002) + correlated 0.001,
action noise N(0, 0.05) + correlated 0.015). ``timing``: ``lockstep`` (commands act from the next
physics step, readings are current) or ``jitter`` (:class:`~handover.sim_twin.twin.TimingJitter`:
each command takes effect after U(0, 20 ms), each joint reading is U(0, 20 ms) old, drawn per command
and per reading, as in an unsynchronised real-time graph over the real devices).

Judged by :func:`handover.sim_twin.success.judge` (rule :data:`~handover.sim_twin.success.SUCCESS_RULE`)
on the episode's last tick. Per episode the report records its parameters and, per joint group, the
peak joint speed in the twin during the policy steps next to the group's velocity limit (the twin
enforces the limit, so a peak at the limit means the motion was cut; ``saturated_fraction`` is the
largest share of physics steps one joint of the group spent there) and the peak speed the policy's targets
asked for (target change per control period, before the gate).

Reproducibility: episode ``e`` of group ``g`` draws its parameters from
``default_rng([seed, g, e, 0])``, tracker noise from ``[seed, g, e, 1]``, timing from ``[seed, g,
e, 2]``, contract noise from ``[seed, g, e, 3]`` and the throw's goal (the cell config's ``goal``,
drawn per episode) from ``[seed, g, e, 4]``; physics and networks are deterministic, so the
same bundle, config, options and seed give the same report. One policy and one twin run all
episodes in order: the contract's frame stack is not cleared at reset (quirk of the original), and
each episode starts where the last ended.

Mass estimate of an episode: the property estimator's ``mass`` output (manifest
``output_labels``) at the episode's last policy step, as a factor of the nominal mass; its relative
error is ``|estimate - f| / f`` with ``f`` the episode's true factor; the mass MRE of a group is the
mean over its episodes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
import dataclasses
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, CellConfig, load_cell_config
from handover.runtime import run_status
from handover.runtime.errors import InputError
from handover.runtime.files import atomic_write, output_file, write_text

DEFAULT_MASS_FACTORS = (1.0,)
RANDOMIZE = ("none", "training")
TIMING = ("lockstep", "jitter")
DRAWN = "drawn"  # the group key of episodes whose mass factor the training randomization draws
TIMING_MODELS = {
    "lockstep": "commands act from the next physics step; joint readings are current",
    "jitter": "each command takes effect after U(0, 20 ms); each joint reading is U(0, 20 ms) old; drawn per "
              "command and per reading, in whole physics steps",
}
DEFAULT_EPISODES = 20
TRAINING_MASS_RANGE = (0.5, 1.5)  # the original environment's mass randomization, x nominal
MASS_LABEL = "mass"  # property-estimator output used as the mass-factor estimate
MASS_ESTIMATE_DEFINITION = (
    "property estimator 'mass' output at the episode's last control step (factor of the nominal mass); "
    "relative error |estimate - factor| / factor, averaged over the factor's episodes"
)


# --------------------------------------------------------------------------------------------
# Mass factors


def factor_key(factor: float) -> str:
    """The factor as a short string with at least one decimal: 1 -> "1.0", 0.6 -> "0.6", 2.25 -> "2.25"."""
    s = f"{factor:g}"
    return s if any(c in s for c in ".en") else f"{s}.0"  # "e": 1e-05, "n": inf/nan


def group_key(factor: Optional[float]) -> str:
    """The report's group key of a mass factor: :func:`factor_key`, or :data:`DRAWN` for None."""
    return DRAWN if factor is None else factor_key(factor)


def check_mass_factors(factors: Sequence[float], source: str = "mass_factors") -> tuple[float, ...]:
    """Positive, finite, distinct (as :func:`factor_key` strings) factors; :class:`InputError` names the bad one."""
    out: list[float] = []
    seen: dict[str, float] = {}
    if len(factors) == 0:
        raise InputError(f"{source}: no mass factor given")
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)):
            raise InputError(f"{source}: {f!r} is not a number")
        f = float(f)
        if not (math.isfinite(f) and f > 0):
            raise InputError(f"{source}: mass factor {f:g} must be a positive number")
        key = factor_key(f)
        if key in seen:
            raise InputError(f"{source}: mass factor {key} is given twice")
        seen[key] = f
        out.append(f)
    return tuple(out)


def parse_mass_factors(text: str, option: str = "--mass-factors") -> tuple[float, ...]:
    """``"0.2,0.6,1.0"`` -> (0.2, 0.6, 1.0). Errors name the bad value and ``option``."""
    values = []
    for part in text.split(","):
        item = part.strip()
        try:
            values.append(float(item))
        except ValueError:
            raise InputError(f"{option}: {item!r} is not a number (in {text!r}; expected e.g. 0.6,1.0,1.4)") from None
    return check_mass_factors(values, f"{option} {text!r}")


# --------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class GroupSpeed:
    """Joint speeds of one joint group (e.g. ``thrower/arm``) during an episode's policy steps, rad/s."""

    peak: float  # peak |velocity| in the twin (at most the limit: the twin enforces it)
    limit: float  # the group's velocity limit (the largest of its joints')
    saturated_fraction: float  # the largest share of physics steps one joint of the group spent at its limit
    commanded_peak: float  # peak |target change| / control period of the policy's targets, before the gate


@dataclass(frozen=True)
class EpisodeResult:
    group: str  # the mass-factor group: factor_key(f), or DRAWN
    mass_factor: float  # true object mass factor of the episode
    episode: int  # index within the group, 0..N-1
    success: bool
    kind: str  # outcome kind, see handover.sim_twin.success.KINDS
    reason: str
    distance_to_catcher_palm: float  # m, at the end
    object_position: tuple[float, float, float]  # m, world, at the end
    mass_estimate: Optional[float]  # factor, or None without a mass estimator
    wall_s: float  # wall time of the episode incl. reset and judgement, s
    params: dict = field(default_factory=dict)  # the episode's EpisodeParams (EpisodeParams.to_json)
    goal: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the throw's goal of the episode, m, world
    speeds: dict = field(default_factory=dict)  # "side/group" -> GroupSpeed

    @property
    def mass_relative_error(self) -> Optional[float]:
        if self.mass_estimate is None:
            return None
        return abs(self.mass_estimate - self.mass_factor) / self.mass_factor


@dataclass(frozen=True)
class FactorSummary:
    mass_factor: Optional[float]  # None for the DRAWN group
    episodes: int
    successes: int
    mass_mre: Optional[float]  # 0..1 (fraction), None without a mass estimator
    mean_estimate: Optional[float]
    outcomes: dict[str, int]  # outcome kind -> count

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass
class EvalReport:
    bundle: str
    config: str
    seed: int
    steps: int  # control steps per episode
    episodes_per_factor: int
    mass_factors: tuple[Optional[float], ...]  # None: drawn by the training randomization
    has_mass_estimate: bool
    randomize: str = "none"
    timing: str = "lockstep"
    results: list[EpisodeResult] = field(default_factory=list)
    wall_s: float = 0.0
    created_utc: str = ""

    @property
    def episodes(self) -> int:
        return len(self.results)

    @property
    def successes(self) -> int:
        return sum(r.success for r in self.results)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def by_factor(self) -> dict[str, FactorSummary]:
        """Summaries keyed by :func:`factor_key`, in the order of :attr:`mass_factors`."""
        out = {}
        for f in self.mass_factors:
            key = group_key(f)
            rs = [r for r in self.results if r.group == key]
            errs = [r.mass_relative_error for r in rs if r.mass_estimate is not None]
            ests = [r.mass_estimate for r in rs if r.mass_estimate is not None]
            out[key] = FactorSummary(
                mass_factor=f,
                episodes=len(rs),
                successes=sum(r.success for r in rs),
                mass_mre=float(np.mean(errs)) if errs else None,
                mean_estimate=float(np.mean(ests)) if ests else None,
                outcomes=dict(Counter(r.kind for r in rs)),
            )
        return out

    def speed_summary(self) -> dict[str, dict]:
        """Per joint group over all episodes: the peak speed, the limit, the mean saturated fraction
        and the peak commanded speed (rad/s)."""
        out: dict[str, dict] = {}
        for r in self.results:
            for g, sp in r.speeds.items():
                o = out.setdefault(g, {"peak_rad_s": 0.0, "limit_rad_s": sp.limit, "saturated_fraction": [],
                                       "commanded_peak_rad_s": 0.0})
                o["peak_rad_s"] = max(o["peak_rad_s"], sp.peak)
                o["commanded_peak_rad_s"] = max(o["commanded_peak_rad_s"], sp.commanded_peak)
                o["saturated_fraction"].append(sp.saturated_fraction)
        for o in out.values():
            o["saturated_fraction"] = float(np.mean(o["saturated_fraction"]))
        return out

    @property
    def mass_mre(self) -> dict[str, float]:
        """Mean relative error of the mass estimate per factor (0..1); empty without a mass estimator."""
        return {k: s.mass_mre for k, s in self.by_factor().items() if s.mass_mre is not None}

    def to_json_dict(self) -> dict:
        from handover.sim_twin.success import SUCCESS_RULE

        by = self.by_factor()
        return {
            "success_rate": self.success_rate,
            "episodes": self.episodes,
            "by_mass_factor": {k: {"successes": s.successes, "episodes": s.episodes} for k, s in by.items()},
            "mass_mre": self.mass_mre,
            "mass_estimate_mean": {k: s.mean_estimate for k, s in by.items() if s.mean_estimate is not None},
            "outcomes_by_mass_factor": {k: s.outcomes for k, s in by.items()},
            "randomize": self.randomize,
            "timing": self.timing,
            "timing_model": TIMING_MODELS[self.timing],
            "joint_speeds": self.speed_summary(),
            "bundle": self.bundle,
            "config": self.config,
            "seed": self.seed,
            "steps_per_episode": self.steps,
            "episodes_per_factor": self.episodes_per_factor,
            "training_mass_range": list(TRAINING_MASS_RANGE),
            "success_rule": SUCCESS_RULE,
            "mass_estimate_definition": MASS_ESTIMATE_DEFINITION if self.has_mass_estimate else None,
            "wall_s": self.wall_s,
            "wall_s_per_episode": self.wall_s / self.episodes if self.episodes else None,
            "created_utc": self.created_utc,
            "results": [{k: v for k, v in asdict(r).items() if k != "wall_s"} for r in self.results],
        }


# --------------------------------------------------------------------------------------------
# Running


def _mass_output_index(networks) -> Optional[int]:
    """Index of the ``mass`` output of the bundle's property estimator, or None."""
    manifest = networks.manifest
    prop = manifest.networks.get("property_estimator") if manifest is not None else None
    if prop is None or MASS_LABEL not in prop.output_labels:
        return None
    return prop.output_labels.index(MASS_LABEL)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def group_speeds(cfg: CellConfig, stats, records, reset_targets) -> dict:
    """Per joint group: :class:`GroupSpeed` from the twin's :class:`~handover.sim_twin.twin.SpeedStats`
    (over the policy steps) and the policy's targets of those ticks (rad, before the gate), starting
    from the episode's reset targets (rad): hand targets are absolute, so the first step's change
    is often the largest."""
    from handover.sim_twin.devices import GROUPS

    targets = [reset_targets] + [r.result.targets for r in records if r.step is not None and r.result is not None]
    commanded = np.abs(np.diff(np.asarray(targets), axis=0)) / cfg.control_period_s if len(targets) > 1 else np.zeros((1, 44))
    out, i = {}, 0
    for side, group in GROUPS:
        n = len(getattr(getattr(cfg, side), group).joints)
        sl = slice(i, i + n)
        i += n
        limit = np.asarray(getattr(getattr(cfg, side), group).velocity_limit)
        out[f"{side}/{group}"] = GroupSpeed(
            peak=float(stats.peak[sl].max()),
            limit=float(limit.max()),
            saturated_fraction=float(stats.saturated_steps[sl].max() / max(stats.steps, 1)),
            commanded_peak=float(commanded[:, sl].max()),
        )
    return out


def evaluate(
    bundle_dir: str | Path,
    mass_factors: Optional[Sequence[float]] = None,
    episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    cfg: Optional[CellConfig] = None,
    steps: Optional[int] = None,
    progress: bool = True,
    randomize: str = "none",
    timing: str = "lockstep",
) -> EvalReport:
    """Run ``episodes`` episodes per mass factor with the bundle in ``bundle_dir`` (see the module
    docstring). ``mass_factors``: default (1.0,) without randomization, one group whose mass the
    randomization draws with ``randomize="training"``; ``cfg``: the cell config (default
    ``launch/cell.yaml``); ``steps``: policy steps per episode (default ``cfg.episode_steps``);
    ``progress``: a tqdm bar on stderr.

    Raises :class:`InputError` for bad factors/counts/choices, ``BundleError`` for a bad bundle."""
    from tqdm import tqdm

    from handover.runtime.contract import ContractSpec
    from handover.runtime.contract_state import ContractNoise
    from handover.runtime.episode_sequencer import EpisodeSequencer
    from handover.runtime.policy_controller import PolicyController
    from handover.runtime.policy_networks import PolicyNetworks
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.episode import run_protocol_episode
    from handover.sim_twin.success import judge
    from handover.sim_twin.twin import EpisodeParams, TimingJitter, Twin

    randomize = _check_choice("randomize", randomize, RANDOMIZE)
    timing = _check_choice("timing", timing, TIMING)
    if mass_factors is None:
        factors: tuple[Optional[float], ...] = (None,) if randomize == "training" else DEFAULT_MASS_FACTORS
    else:
        factors = check_mass_factors(list(mass_factors))
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise InputError(f"episodes: must be a whole number >= 1 (got {episodes!r})")
    cfg = cfg or load_cell_config()
    steps = cfg.episode_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps: must be a whole number >= 1 (got {steps!r})")

    networks = PolicyNetworks.load(bundle_dir)
    mass_index = _mass_output_index(networks)
    spec = ContractSpec.from_config(cfg)
    noise = ContractNoise.training(cfg.history_noise) if randomize == "training" else ContractNoise(history=cfg.history_noise)
    controller = PolicyController(spec, networks, cfg.goal.center, cfg.object.start_position, noise)
    dry = PolicyController(spec, networks, cfg.goal.center, cfg.object.start_position, noise)
    sequencer = EpisodeSequencer(controller, dry, period_s=cfg.control_period_s, episode_steps=steps)
    twin = Twin(cfg, seed=seed)
    devices = TwinDevices.create(twin)
    devices.bring_up()

    report = EvalReport(
        bundle=str(Path(bundle_dir).resolve()), config=str(cfg.source), seed=seed, steps=steps,
        episodes_per_factor=episodes, mass_factors=factors, has_mass_estimate=mass_index is not None,
        randomize=randomize, timing=timing,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    bar = tqdm(total=len(factors) * episodes, unit="episode", file=sys.stderr, disable=not progress,
               desc="eval", dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        for g, f in enumerate(factors):
            for e in range(episodes):
                t0 = time.perf_counter()
                rng = lambda k: np.random.default_rng([seed, g, e, k])  # noqa: E731
                if randomize == "training":
                    params = EpisodeParams.sample_training(rng(0), twin.thrower_links)
                    if f is not None:
                        params = dataclasses.replace(params, mass_factor=f)
                else:
                    params = EpisodeParams(mass_factor=f)
                twin.camera.rng = rng(1)
                twin.set_timing(TimingJitter() if timing == "jitter" else None, rng(2))
                goal = cfg.goal.draw(rng(4))
                for c in (controller, dry):
                    c.step_fn.state.set_noise(noise, rng(3))
                    c.set_goal(goal)

                def place() -> tuple[bool, str]:
                    twin.place_object(params)
                    return True, ""

                def on_tick(rec) -> None:
                    if rec.step is None and rec.phase == "warmup":
                        twin.reset_speed_stats()  # count the policy steps only

                records = run_protocol_episode(devices, sequencer, place, on_tick=on_tick,
                                               read_efforts=controller.needs_efforts)
                out = judge(twin)
                props = controller.last_result.properties if controller.last_result is not None else None
                estimate = float(np.asarray(props).reshape(-1)[mass_index]) if mass_index is not None and props is not None else None
                report.results.append(EpisodeResult(
                    group=group_key(f), mass_factor=params.mass_factor, episode=e, success=out.success, kind=out.kind,
                    reason=out.reason, distance_to_catcher_palm=out.distance_to_catcher_palm,
                    object_position=tuple(float(x) for x in out.object_position),
                    mass_estimate=estimate, wall_s=time.perf_counter() - t0, params=params.to_json(), goal=goal,
                    speeds=group_speeds(cfg, twin.speed_stats, records, sequencer.reset_targets),
                ))
                bar.set_postfix(mass=group_key(f), success=f"{report.successes}/{report.episodes}", refresh=False)
                bar.update(1)
                run_status.report(f"{report.episodes} of {len(factors) * episodes} episodes run ({report.successes} "
                                  "caught); nothing written (the report is written when all are done)")
    finally:
        bar.close()
    report.wall_s = time.perf_counter() - t_start
    return report


# --------------------------------------------------------------------------------------------
# Output


def format_table(report: EvalReport) -> str:
    """One row per mass factor and a summary line."""
    header = f"{'mass factor':>11}  {'successes':>11}  {'success %':>9}  {'mass MRE %':>10}  {'mean estimate':>13}"
    lines = [header, "-" * len(header)]
    for key, s in report.by_factor().items():
        mre = f"{100 * s.mass_mre:.1f}" if s.mass_mre is not None else "-"
        est = f"{s.mean_estimate:.3f}" if s.mean_estimate is not None else "-"
        lines.append(f"{key:>11}  {f'{s.successes}/{s.episodes}':>11}  {100 * s.success_rate:>9.1f}  {mre:>10}  {est:>13}")
    lines.append("-" * len(header))
    speeds = report.speed_summary()
    if speeds:
        lines.append(f"{'joint group':>13}  {'peak rad/s':>10}  {'limit':>6}  {'at limit %':>10}  {'asked rad/s':>11}")
        for g, sp in speeds.items():
            lines.append(f"{g:>13}  {sp['peak_rad_s']:>10.2f}  {sp['limit_rad_s']:>6.2f}  "
                         f"{100 * sp['saturated_fraction']:>10.1f}  {sp['commanded_peak_rad_s']:>11.2f}")
        lines.append("  peak: in the twin during the policy steps (it enforces the limits); at limit: share of physics "
                     "steps a joint of the group was held at its limit; asked: the policy's target change per period")
    lines.append(f"randomize {report.randomize}, timing {report.timing} ({TIMING_MODELS[report.timing]})")
    summary = f"overall: {report.successes}/{report.episodes} episodes succeeded ({100 * report.success_rate:.1f} %)"
    errs = [r.mass_relative_error for r in report.results if r.mass_estimate is not None]
    if errs:
        summary += f", mass MRE {100 * np.mean(errs):.1f} % over all episodes"
    else:
        summary += ", no mass estimate (the bundle has no property estimator with a 'mass' output)"
    if report.episodes:
        summary += f"; {report.wall_s:.1f} s wall, {1e3 * report.wall_s / report.episodes:.0f} ms per episode"
    lines.append(summary)
    return "\n".join(lines)


def write_plot(report: EvalReport, path: str | Path) -> Path:
    """PNG: success rate per factor (bars, %) on top, mass MRE per factor (%) below; the training
    mass range shaded on both."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    by = report.by_factor()
    # The DRAWN group (mass from the training randomization) stands at the nominal factor 1.0.
    x = np.array([1.0 if s.mass_factor is None else s.mass_factor for s in by.values()])
    gaps = np.diff(np.unique(x))
    width = 0.6 * float(gaps.min()) if gaps.size else 0.15
    lo, hi = min(x.min(), TRAINING_MASS_RANGE[0]) - width, max(x.max(), TRAINING_MASS_RANGE[1]) + width

    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax_s, ax_m = fig.subplots(2, 1, sharex=True)
    for ax in (ax_s, ax_m):
        ax.axvspan(*TRAINING_MASS_RANGE, color="tab:green", alpha=0.12, label="training range")
        ax.set_xlim(lo, hi)
        ax.grid(axis="y", alpha=0.3)

    rates = np.array([100 * s.success_rate for s in by.values()])
    ax_s.bar(x, rates, width=width, color="tab:blue")
    for xi, r, s in zip(x, rates, by.values()):
        ax_s.annotate(f"{s.successes}/{s.episodes}", (xi, r), ha="center", va="bottom", fontsize=8,
                      xytext=(0, 2), textcoords="offset points")
    ax_s.set_ylim(0, 105)
    ax_s.set_ylabel("success rate (%)")
    ax_s.legend(loc="upper right", fontsize=8)
    ax_s.set_title(f"{'/'.join(Path(report.bundle).parts[-2:])}: {report.episodes_per_factor} episodes per factor, "
                   f"{report.steps} steps, randomize {report.randomize}, timing {report.timing}, seed {report.seed}",
                   fontsize=9)

    mre = report.mass_mre
    if mre:
        keys = [k for k in by if k in mre]
        ax_m.bar([1.0 if by[k].mass_factor is None else by[k].mass_factor for k in keys], [100 * mre[k] for k in keys], width=width, color="tab:orange")
        ax_m.set_ylim(bottom=0)
    else:
        ax_m.text(0.5, 0.5, "no mass estimate (no property estimator with a 'mass' output)",
                  ha="center", va="center", transform=ax_m.transAxes, fontsize=9)
        ax_m.set_ylim(0, 1)
    ax_m.set_ylabel("mass MRE (%)")
    ax_m.set_xlabel("object mass factor (x nominal)")
    ax_m.set_xticks(x, list(by))
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
    return path


def write_json(report: EvalReport, path: str | Path) -> Path:
    return write_text(path, json.dumps(report.to_json_dict(), indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="success rate of a policy bundle in the twin per object mass factor (and its mass-estimate error)",
        description="Run episodes in the MuJoCo twin with an ONNX policy bundle, judge each by the success rule, "
        "and report the success rate and the mass estimate's relative error per object mass factor.",
    )
    p.add_argument("--bundle", type=Path, default=None, metavar="DIR", help="policy bundle (default: the config's models.bundle)")
    p.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, metavar="N", help="episodes per mass factor (default: %(default)s)")
    p.add_argument("--json", type=Path, required=True, metavar="OUT.json", help="write the report here")
    p.add_argument("--mass-factors", default=None, metavar="LIST",
                   help="comma-separated object mass factors, x nominal, e.g. 0.2,0.6,1.0,1.4,2.2 (default: 1.0; with "
                   "--randomize training: drawn per episode)")
    p.add_argument("--randomize", choices=RANDOMIZE, default="none",
                   help="none: nominal physics; training: the original's training randomization, observation and action "
                   "noise included (default: %(default)s)")
    p.add_argument("--timing", choices=TIMING, default="lockstep",
                   help="lockstep, or jitter: commands act after 0-20 ms, joint readings 0-20 ms old (default: %(default)s)")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="plot (default: next to the JSON, .png)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization, noise and timing (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, metavar="K", help="control steps per episode (default: the config's episode_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    factors = None if args.mass_factors is None else parse_mass_factors(args.mass_factors)
    if args.episodes < 1:
        raise InputError(f"--episodes: must be >= 1 (got {args.episodes})")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps: must be >= 1 (got {args.steps})")
    cfg = load_cell_config(args.config)
    bundle = args.bundle or cfg.models.bundle
    if bundle is None:
        raise InputError(f"--bundle: not given, and {cfg.source} has no models.bundle")
    inputs = [bundle, args.config]
    output_file(args.json, "--json", ".json", inputs)
    args.plot = output_file(args.plot or args.json.with_suffix(".png"), "--plot", ".png", inputs + [args.json])
    report = evaluate(bundle, factors, args.episodes, seed=args.seed, cfg=cfg, steps=args.steps,
                      progress=not args.no_progress, randomize=args.randomize, timing=args.timing)
    json_path = write_json(report, args.json)
    plot_path = write_plot(report, args.plot)
    print(format_table(report))
    print(f"wrote {json_path} and {plot_path}")
    return 0
