"""``handover eval``: success rate of a policy bundle in the MuJoCo twin, per object mass factor,
and the error of the bundle's mass estimate.

Every episode runs the deployed path: the ONNX bundle (:class:`PolicyNetworks`) inside a
:class:`PolicyController`, reading and commanding the twin's devices (:class:`TwinDevices`)
through :func:`run_episode`. No expert, no privileged state: the policy sees the joint readings
and the simulated D435 tracker (noise, latency, dropout as configured).

Per mass factor ``f`` there are N episodes with ``EpisodeParams(mass_factor=f)`` (every other
parameter nominal), each from :meth:`Twin.reset`, ``cfg.episode_steps`` control steps long
(or ``--steps``), judged by :func:`handover.sim_twin.success.judge` (rule:
:data:`~handover.sim_twin.success.SUCCESS_RULE`) after its last step.

Reproducibility: the tracker noise of episode ``e`` (0..N-1) of every factor is drawn from
``numpy.random.default_rng([seed, e])``; physics and networks are deterministic, so the same
bundle, config, factors, episode count and seed give the same report. (Episode ``e`` of each
factor sees the same noise, which makes the factors directly comparable.) One policy runs all
episodes, factors in the given order: the contract's frame stack is not cleared at reset
(quirk of the original), so an episode's first observations carry the previous episode's frames.

Mass estimate of an episode: the property estimator's ``mass`` output (manifest
``output_labels``) at the episode's last control step, as a factor of the nominal mass; its
relative error is ``|estimate - f| / f``; the mass MRE of a factor is the mean over its episodes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, CellConfig, load_cell_config
from handover.runtime.errors import InputError

DEFAULT_MASS_FACTORS = (1.0,)
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
class EpisodeResult:
    mass_factor: float  # true object mass factor of the episode
    episode: int  # index within the factor, 0..N-1 (also the tracker-noise seed index)
    success: bool
    kind: str  # outcome kind, see handover.sim_twin.success.KINDS
    reason: str
    distance_to_catcher_palm: float  # m, at the end
    object_position: tuple[float, float, float]  # m, world, at the end
    mass_estimate: Optional[float]  # factor, or None without a mass estimator
    wall_s: float  # wall time of the episode incl. reset and judgement, s

    @property
    def mass_relative_error(self) -> Optional[float]:
        if self.mass_estimate is None:
            return None
        return abs(self.mass_estimate - self.mass_factor) / self.mass_factor


@dataclass(frozen=True)
class FactorSummary:
    mass_factor: float
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
    mass_factors: tuple[float, ...]
    has_mass_estimate: bool
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
            rs = [r for r in self.results if r.mass_factor == f]
            errs = [r.mass_relative_error for r in rs if r.mass_estimate is not None]
            ests = [r.mass_estimate for r in rs if r.mass_estimate is not None]
            out[factor_key(f)] = FactorSummary(
                mass_factor=f,
                episodes=len(rs),
                successes=sum(r.success for r in rs),
                mass_mre=float(np.mean(errs)) if errs else None,
                mean_estimate=float(np.mean(ests)) if ests else None,
                outcomes=dict(Counter(r.kind for r in rs)),
            )
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
            "results": [
                {k: v for k, v in asdict(r).items() if k != "wall_s"} | {"mass_factor": factor_key(r.mass_factor)}
                for r in self.results
            ],
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


def evaluate(
    bundle_dir: str | Path,
    mass_factors: Sequence[float] = DEFAULT_MASS_FACTORS,
    episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    cfg: Optional[CellConfig] = None,
    steps: Optional[int] = None,
    progress: bool = True,
) -> EvalReport:
    """Run ``episodes`` episodes per mass factor with the bundle in ``bundle_dir`` (see the module
    docstring). ``cfg``: the cell config (default ``launch/cell.yaml``); ``steps``: control steps
    per episode (default ``cfg.episode_steps``); ``progress``: a tqdm bar on stderr.

    Raises :class:`InputError` for bad factors/counts, ``BundleError`` for a bad bundle."""
    from tqdm import tqdm

    from handover.runtime.contract import ContractSpec
    from handover.runtime.policy_controller import PolicyController
    from handover.runtime.policy_networks import PolicyNetworks
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.episode import run_episode
    from handover.sim_twin.success import judge
    from handover.sim_twin.twin import EpisodeParams, Twin

    factors = check_mass_factors(list(mass_factors))
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise InputError(f"episodes: must be a whole number >= 1 (got {episodes!r})")
    cfg = cfg or load_cell_config()
    steps = cfg.episode_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps: must be a whole number >= 1 (got {steps!r})")

    networks = PolicyNetworks.load(bundle_dir)
    mass_index = _mass_output_index(networks)
    controller = PolicyController(ContractSpec.from_config(cfg), networks, cfg.goal, cfg.object.start_position)
    twin = Twin(cfg, seed=seed)
    devices = TwinDevices.create(twin)
    devices.bring_up()

    report = EvalReport(
        bundle=str(Path(bundle_dir).resolve()), config=str(cfg.source), seed=seed, steps=steps,
        episodes_per_factor=episodes, mass_factors=factors, has_mass_estimate=mass_index is not None,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    bar = tqdm(total=len(factors) * episodes, unit="episode", file=sys.stderr, disable=not progress,
               desc="eval", dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        for f in factors:
            for e in range(episodes):
                t0 = time.perf_counter()
                twin.reset(EpisodeParams(mass_factor=f))
                twin.camera.rng = np.random.default_rng([seed, e])
                run_episode(devices, controller, steps)
                out = judge(twin)
                props = controller.last_result.properties if controller.last_result is not None else None
                estimate = float(np.asarray(props).reshape(-1)[mass_index]) if mass_index is not None and props is not None else None
                report.results.append(EpisodeResult(
                    mass_factor=f, episode=e, success=out.success, kind=out.kind, reason=out.reason,
                    distance_to_catcher_palm=out.distance_to_catcher_palm,
                    object_position=tuple(float(x) for x in out.object_position),
                    mass_estimate=estimate, wall_s=time.perf_counter() - t0,
                ))
                bar.set_postfix(mass=factor_key(f), success=f"{report.successes}/{report.episodes}", refresh=False)
                bar.update(1)
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
    x = np.array([s.mass_factor for s in by.values()])
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
                   f"{report.steps} steps, seed {report.seed}", fontsize=10)

    mre = report.mass_mre
    if mre:
        keys = [k for k in by if k in mre]
        ax_m.bar([by[k].mass_factor for k in keys], [100 * mre[k] for k in keys], width=width, color="tab:orange")
        ax_m.set_ylim(bottom=0)
    else:
        ax_m.text(0.5, 0.5, "no mass estimate (no property estimator with a 'mass' output)",
                  ha="center", va="center", transform=ax_m.transAxes, fontsize=9)
        ax_m.set_ylim(0, 1)
    ax_m.set_ylabel("mass MRE (%)")
    ax_m.set_xlabel("object mass factor (x nominal)")
    ax_m.set_xticks(x, [factor_key(f) for f in x])
    fig.savefig(path, dpi=110)
    return path


def write_json(report: EvalReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json_dict(), indent=2) + "\n")
    return path


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
    p.add_argument("--mass-factors", default=",".join(factor_key(f) for f in DEFAULT_MASS_FACTORS), metavar="LIST",
                   help="comma-separated object mass factors, x nominal (default: %(default)s), e.g. 0.2,0.6,1.0,1.4,2.2")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="plot (default: next to the JSON, .png)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.add_argument("--seed", type=int, default=0, help="tracker-noise seed (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, metavar="K", help="control steps per episode (default: the config's episode_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    factors = parse_mass_factors(args.mass_factors)
    if args.episodes < 1:
        raise InputError(f"--episodes: must be >= 1 (got {args.episodes})")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps: must be >= 1 (got {args.steps})")
    cfg = load_cell_config(args.config)
    bundle = args.bundle or cfg.models.bundle
    if bundle is None:
        raise InputError(f"--bundle: not given, and {cfg.source} has no models.bundle")
    report = evaluate(bundle, factors, args.episodes, seed=args.seed, cfg=cfg, steps=args.steps,
                      progress=not args.no_progress)
    json_path = write_json(report, args.json)
    plot_path = write_plot(report, args.plot or args.json.with_suffix(".png"))
    print(format_table(report))
    print(f"wrote {json_path} and {plot_path}")
    return 0
