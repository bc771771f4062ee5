"""``handover train-reference``: train the reference policy in the MuJoCo twin from the scripted
expert, export it as a policy bundle, evaluate it, and record how it was made in the manifest.

Pipeline (each stage with a progress bar on stderr, a summary on stdout):

1. ``record``: expert demonstrations (:class:`~handover.sim_twin.expert.ExpertPolicy`) under the
   original's training randomization, its contract noise and jittered timing, the goal drawn per
   episode, one run (:func:`handover.sim_twin.demonstrations.record`);
2. ``goal``: the goal estimator (history 60 -> true arrival point relative to the thrower base);
3. ``actors``: the actors' inputs rebuilt through the contract with that estimator's predictions,
   then behaviour cloning of both actors;
4. ``dagger``: per round ``r`` the learner (goal estimator + actors, in torch) acts with probability
   ``beta_r = 1 - 0.5^r`` per step, the expert labels every step; the episodes are added to the
   dataset and the goal estimator and the actors are trained further on all of it (warm start);
5. ``property``: the property estimator (940 -> mass factor) on all episodes;
6. ``export``: the ``.pt`` state dicts (work folder) -> ONNX bundle (:func:`export_bundle`); if the
   export check fails on the property estimator (its random test inputs lie far outside the data,
   where large first-layer gains make onnxruntime and torch differ by more than the tolerance), it
   is refit with 10x the weight decay, at most :data:`EXPORT_RETRIES` times (noted in the manifest);
7. ``eval``: :func:`handover.sim_twin.evaluate.evaluate` on the bundle;
8. the manifest gets ``provenance["training"]`` (data, seeds, losses, seconds, hyperparameters)
   and ``provenance["evaluation"]`` (the evaluation report).

The dataset and the checkpoints stay in the work folder (``--work``); the bundle holds only the
ONNX files and the manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handover.runtime import run_status
from handover.runtime.cell_config import DEFAULT_CONFIG_PATH
from handover.runtime.cli_values import nonneg_int, positive_int
from handover.sim_twin.training import ActorArch, FitConfig

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "launch" / "reference_bundle"
DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handover" / "train-reference"
PROPERTY_LABELS = {"mass_factor": "mass"}  # dataset array -> bundle output label
EXPORT_RETRIES = 2  # property-estimator refits (10x weight decay each) after a failed export check


@dataclass(frozen=True)
class TrainReferenceConfig:
    """Everything that decides the trained bundle (recorded in the manifest)."""

    episodes: int = 1000  # expert demonstrations
    dagger_rounds: int = 2
    dagger_episodes: int = 400  # per DAgger round
    seed: int = 0
    eval_episodes: int = 100  # with the nominal object (mass factor 1.0)
    sweep_episodes: int = 20  # per mass factor of the sweep (the paper's Table 2 runs 20)
    sweep_mass_factors: tuple[float, ...] = tuple(round(0.2 * k, 1) for k in range(1, 12))  # 0.2 .. 2.2
    arch: ActorArch = ActorArch()
    actor_fit: FitConfig = FitConfig(epochs=40, batch_size=512, lr=1e-3)
    actor_refit: FitConfig = FitConfig(epochs=20, batch_size=512, lr=3e-4)  # DAgger rounds (warm start)
    goal_fit: FitConfig = FitConfig(epochs=40, batch_size=512, lr=1e-3)
    goal_refit: FitConfig = FitConfig(epochs=15, batch_size=512, lr=3e-4)
    property_fit: FitConfig = FitConfig(epochs=60, batch_size=512, lr=1e-3, weight_decay=1e-4)
    property_targets: tuple[str, ...] = ("mass_factor",)
    # The estimate that counts is the one at the episode's end (handover eval reads the last step), so
    # the estimator learns from windows ending at step 20 or later: they hold the throw and the catch.
    property_first_step: int = 20

    def __post_init__(self):
        for name in ("episodes", "dagger_episodes", "eval_episodes", "sweep_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainReferenceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dagger_rounds < 0:
            raise ValueError(f"TrainReferenceConfig.dagger_rounds must be >= 0, got {self.dagger_rounds}")

    @staticmethod
    def beta(round_: int) -> float:
        """Probability per step that the learner's action is executed in DAgger round ``round_`` (1..)."""
        return 1.0 - 0.5**round_

    def seeds(self) -> dict[str, int]:
        """The recording runs' seeds, derived from ``seed``: ``expert``, ``dagger_1``, ..."""
        drawn = np.random.default_rng(self.seed).integers(0, 2**31 - 1, size=1 + self.dagger_rounds)
        return {"expert": int(drawn[0]), **{f"dagger_{r}": int(drawn[r]) for r in range(1, self.dagger_rounds + 1)}}


@dataclass
class Networks:
    goal: object = None
    thrower: object = None
    catcher: object = None
    property: object = None


@dataclass
class Outcome:
    """What the pipeline produced, for the manifest and the summary."""

    seconds: dict[str, float] = field(default_factory=dict)
    fits: dict[str, list] = field(default_factory=dict)  # network -> FitResult dicts, in fit order
    success: dict[str, float] = field(default_factory=dict)  # recording -> success rate
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the pipeline had to adapt
    property_targets: tuple[str, ...] = ("mass_factor",)


def _stage(out: Outcome, name: str, t0: float) -> None:
    out.seconds[name] = out.seconds.get(name, 0.0) + time.perf_counter() - t0


def _say(msg: str) -> None:
    print(f"train-reference: {msg}", file=sys.stderr, flush=True)
    run_status.report(f"was {msg}; the bundle is written only when training and evaluation are done")


def _fit_goal(ds, tc: TrainReferenceConfig, nets: Networks, out: Outcome, warm: bool, progress: bool) -> None:
    from handover.sim_twin.training import fit_goal_estimator
    from handover.sim_twin.demonstrations import goal_samples

    s = goal_samples(ds)
    fit = tc.goal_refit if warm else tc.goal_fit
    nets.goal, res = fit_goal_estimator(s.x, s.y, fit, s.groups, init=nets.goal if warm else None, progress=progress)
    out.fits.setdefault("goal_estimator", []).append(res.to_dict())


def _fit_actors(ds, spec, tc: TrainReferenceConfig, nets: Networks, out: Outcome, warm: bool, progress: bool) -> None:
    from handover.sim_twin.training import fit_actor, goal_fn
    from handover.sim_twin.demonstrations import actor_samples, build_actor_inputs

    inputs = build_actor_inputs(ds, spec, goal_fn(nets.goal))
    fit = tc.actor_refit if warm else tc.actor_fit
    for role, s in zip(("thrower", "catcher"), actor_samples(ds, inputs)):
        init = getattr(nets, role) if warm else None
        net, res = fit_actor(s.x, s.y, fit, tc.arch, s.groups, init=init, name=f"{role} actor", progress=progress)
        setattr(nets, role, net)
        out.fits.setdefault(f"{role}_actor", []).append(res.to_dict())


def _fit_property(ds, fit: FitConfig, first_step: int, nets: Networks, out: Outcome, progress: bool) -> None:
    from handover.sim_twin.training import fit_property_estimator
    from handover.sim_twin.demonstrations import property_samples

    s = property_samples(ds, out.property_targets, first_step)
    nets.property, res = fit_property_estimator(s.x, s.y, fit, s.groups, progress=progress)
    out.fits.setdefault("property_estimator", []).append({**res.to_dict(), "weight_decay": fit.weight_decay})


def train(cfg, tc: TrainReferenceConfig, work: Path, progress: bool = True) -> tuple[Networks, Outcome, object]:
    """Stages 1-5: returns the trained torch networks, the outcome and the final dataset."""
    from handover.runtime.contract import ContractSpec
    from handover.sim_twin import demonstrations as demo
    from handover.sim_twin.expert import ExpertPolicy

    spec = ContractSpec.from_config(cfg)
    expert = ExpertPolicy(cfg)
    seeds = tc.seeds()
    nets, out = Networks(), Outcome(property_targets=tc.property_targets)
    data_path = work / "demonstrations.npz"

    t0 = time.perf_counter()
    _say(f"recording {tc.episodes} expert episodes")
    ds = demo.record(cfg, expert, demo.RecordConfig(episodes=tc.episodes, seed=seeds["expert"]), progress=progress, desc="expert")
    demo.save(ds, data_path)
    out.success["expert"] = float(ds["success"].mean())
    _stage(out, "record", t0)

    t0 = time.perf_counter()
    _fit_goal(ds, tc, nets, out, warm=False, progress=progress)
    _stage(out, "goal", t0)
    t0 = time.perf_counter()
    _fit_actors(ds, spec, tc, nets, out, warm=False, progress=progress)
    _stage(out, "actors", t0)

    for r in range(1, tc.dagger_rounds + 1):
        t0 = time.perf_counter()
        beta = tc.beta(r)
        _say(f"DAgger round {r}/{tc.dagger_rounds}: {tc.dagger_episodes} episodes, learner acts with p = {beta:.3g}")
        learner = demo.LearnerPolicy.from_torch(nets.goal, nets.thrower, nets.catcher)
        rec = demo.RecordConfig(episodes=tc.dagger_episodes, seed=seeds[f"dagger_{r}"], beta=beta, round=r)
        new = demo.record(cfg, expert, rec, learner=learner, progress=progress, desc=f"dagger {r}")
        out.success[f"dagger_{r}"] = float(new["success"].mean())
        ds = demo.concat([ds, new])
        demo.save(ds, data_path)
        _stage(out, "dagger_record", t0)
        t0 = time.perf_counter()
        _fit_goal(ds, tc, nets, out, warm=True, progress=progress)
        _fit_actors(ds, spec, tc, nets, out, warm=True, progress=progress)
        _stage(out, "dagger_fit", t0)

    t0 = time.perf_counter()
    _fit_property(ds, tc.property_fit, tc.property_first_step, nets, out, progress)
    _stage(out, "property", t0)
    out.files["dataset"] = str(data_path.resolve())
    return nets, out, demo.load(data_path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_provenance(tc: TrainReferenceConfig, ds, out: Outcome) -> dict:
    """``provenance["training"]`` of the manifest."""

    n = ds.episodes * ds.steps
    rounds = ds["round"]
    final = {net: {k: fits[-1][k] for k in ("train_loss", "val_loss", "metrics")} for net, fits in out.fits.items()}
    return {
        "data": {
            "dataset": out.files["dataset"],
            "dataset_sha256": _sha256(Path(out.files["dataset"])),
            "episodes": ds.episodes,
            "expert_episodes": int(np.sum(rounds == 0)),
            "dagger_episodes": int(np.sum(rounds > 0)),
            "steps_per_episode": ds.steps,
            "steps": n,
            "samples": {net: fits[-1]["train_samples"] + fits[-1]["val_samples"] for net, fits in out.fits.items()},
            "success_rate": out.success,
            "seeds": {"seed": tc.seed, **tc.seeds()},
            "dagger_rounds": tc.dagger_rounds,
            "dagger_beta": [tc.beta(r) for r in range(1, tc.dagger_rounds + 1)],
            "randomization": "training: EpisodeParams.sample_training and ContractNoise.training (contract document); "
                             "timing jitter (TimingJitter defaults); the goal drawn per episode from the cell config",
            "property_targets": list(tc.property_targets),
        },
        "losses": final,
        "fits": out.fits,
        "seconds": {k: round(v, 2) for k, v in out.seconds.items()},
        "notes": out.notes,
        "hyperparameters": dataclasses.asdict(tc),
    }


def _evaluate(bundle: Path, tc: TrainReferenceConfig, cfg, progress: bool) -> tuple[dict, str]:
    """The bundle's evaluation (``handover eval``'s reports, ``to_json_dict``) and the tables:
    ``nominal`` (``eval_episodes``, nominal physics, lockstep), ``training`` (the same under the
    training randomization), ``training_jitter`` (and jittered timing), ``sweep`` (``sweep_episodes``
    per mass factor, otherwise nominal)."""
    from handover.sim_twin.evaluate import evaluate, format_table

    runs = {
        "nominal": dict(mass_factors=(1.0,), episodes=tc.eval_episodes),
        "training": dict(episodes=tc.eval_episodes, randomize="training"),
        "training_jitter": dict(episodes=tc.eval_episodes, randomize="training", timing="jitter"),
        "sweep": dict(mass_factors=tc.sweep_mass_factors, episodes=tc.sweep_episodes),
    }
    reports = {name: evaluate(bundle, seed=tc.seed, cfg=cfg, progress=progress, **kw) for name, kw in runs.items()}
    table = "\n".join(f"{name}:\n{format_table(r)}" for name, r in reports.items())
    return {name: r.to_json_dict() for name, r in reports.items()}, table


def run_pipeline(cfg, tc: TrainReferenceConfig, out_dir: Path, work: Path, progress: bool = True) -> tuple[dict, str]:
    """All stages; returns the final manifest's provenance and the evaluation table."""
    from handover.runtime.bundle import load_manifest, write_manifest
    from handover.runtime.export import ExportCheckError, export_bundle
    from handover.sim_twin.training import save_state_dict

    work.mkdir(parents=True, exist_ok=True)
    nets, out, ds = train(cfg, tc, work, progress)

    t0 = time.perf_counter()
    ckpt = work / "checkpoints"
    paths = {"thrower": ckpt / "actor_agent0.pt", "catcher": ckpt / "actor_agent1.pt", "goal": ckpt / "model.pt",
             "property": ckpt / "property_estimator.pt"}
    for role, path in paths.items():
        save_state_dict(getattr(nets, role), path)
    labels = tuple(PROPERTY_LABELS.get(t, t) for t in tc.property_targets)
    fit = tc.property_fit
    for attempt in range(EXPORT_RETRIES + 1):
        try:
            export_bundle(out_dir, paths["thrower"], paths["catcher"], paths["goal"], paths["property"], property_labels=labels)
            break
        except ExportCheckError as exc:
            # The export check feeds random inputs far outside the data (+-3 on every window entry); a
            # property estimator with large first-layer gains then differs between onnxruntime and torch
            # by more than the tolerance. Stronger weight decay lowers those gains.
            if "property_estimator" not in str(exc) or attempt == EXPORT_RETRIES:
                raise
            fit = dataclasses.replace(fit, weight_decay=max(fit.weight_decay, 1e-6) * 10)
            note = f"export check failed ({exc}); property estimator refit with weight_decay {fit.weight_decay:g}"
            _say(note)
            out.notes.append(note)
            _stage(out, "export", t0)
            t0 = time.perf_counter()
            _fit_property(ds, fit, tc.property_first_step, nets, out, progress)
            save_state_dict(nets.property, paths["property"])
            _stage(out, "property", t0)
            t0 = time.perf_counter()
    _stage(out, "export", t0)

    t0 = time.perf_counter()
    _say(f"evaluating {out_dir}: {tc.eval_episodes} episodes with the nominal object, {tc.sweep_episodes} "
         f"per mass factor {list(tc.sweep_mass_factors)}")
    evaluation, table = _evaluate(out_dir, tc, cfg, progress)
    _stage(out, "eval", t0)

    manifest = load_manifest(out_dir)
    provenance = {**manifest.provenance, "training": training_provenance(tc, ds, out), "evaluation": evaluation}
    write_manifest(out_dir, dataclasses.replace(manifest, provenance=provenance))
    return load_manifest(out_dir).provenance, table


def summary(provenance: dict, out_dir: Path, table: str) -> list[str]:
    """Printed at the end: bundle size, data, final losses, seconds per stage, evaluation table."""
    tr = provenance["training"]
    d = tr["data"]
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file()) / 1e6
    lines = [
        f"bundle: {out_dir} ({size:.2f} MB)",
        f"data: {d['episodes']} episodes x {d['steps_per_episode']} steps ({d['expert_episodes']} expert, "
        f"{d['dagger_episodes']} DAgger in {d['dagger_rounds']} rounds); dataset {d['dataset']}",
        "success while recording: " + ", ".join(f"{k} {v:.0%}" for k, v in d["success_rate"].items()),
        "final losses (MSE train / validation):",
    ]
    for net, loss in tr["losses"].items():
        val = "-" if loss["val_loss"] is None else f"{loss['val_loss']:.3g}"
        extra = ", ".join(f"{k} {v:.3g}" for k, v in loss["metrics"].items() if k.startswith("val_"))
        lines.append(f"  {net:<19} {loss['train_loss']:.3g} / {val}" + (f"  ({extra})" if extra else ""))
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in tr["seconds"].items())
                 + f"; total {sum(tr['seconds'].values()):.0f}")
    lines += [f"note: {n}" for n in tr["notes"]]
    lines.append(f"evaluation:\n{table}")
    return lines


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = TrainReferenceConfig()
    p = sub.add_parser(
        "train-reference",
        help="train the reference policy in the twin from the scripted expert and export it as a bundle",
        description="Record expert demonstrations in the MuJoCo twin, train the goal estimator, the two actors "
        "(behaviour cloning + DAgger) and the property estimator, export an ONNX bundle, evaluate it, and write "
        "the training and evaluation provenance into its manifest.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="bundle folder (default: %(default)s)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, metavar="DIR",
                   help="dataset and checkpoints (default: %(default)s)")
    p.add_argument("--episodes", type=positive_int, default=d.episodes, metavar="N", help="expert episodes (default: %(default)s)")
    p.add_argument("--dagger-rounds", type=nonneg_int, default=d.dagger_rounds, metavar="R", help="(default: %(default)s)")
    p.add_argument("--dagger-episodes", type=positive_int, default=d.dagger_episodes, metavar="N",
                   help="episodes per DAgger round (default: %(default)s)")
    p.add_argument("--seed", type=nonneg_int, default=d.seed, metavar="S", help="(default: %(default)s)")
    p.add_argument("--eval-episodes", type=positive_int, default=d.eval_episodes, metavar="M",
                   help="evaluation episodes with the nominal object (default: %(default)s)")
    p.add_argument("--sweep-episodes", type=positive_int, default=d.sweep_episodes, metavar="K",
                   help="evaluation episodes per mass factor 0.2..2.2 (default: %(default)s)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="PATH", help="cell config (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainReferenceConfig:
    from handover.runtime.errors import InputError

    try:
        return TrainReferenceConfig(episodes=args.episodes, dagger_rounds=args.dagger_rounds,
                                    dagger_episodes=args.dagger_episodes, seed=args.seed, eval_episodes=args.eval_episodes,
                                    sweep_episodes=args.sweep_episodes)
    except ValueError as exc:
        option = str(exc).split(".", 1)[1].split(" ", 1)[0].replace("_", "-") if "." in str(exc) else ""
        raise InputError(f"--{option}: {exc}" if option else str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from handover.runtime.cell_config import load_cell_config
    from handover.runtime.files import atomic_folder, output_folder

    tc = config_from_args(args)
    cfg = load_cell_config(args.config)
    out = output_folder(args.out, "--out", inputs=[args.config, args.work])
    output_folder(args.work, "--work", inputs=[args.config, args.out])
    t0 = time.perf_counter()
    with atomic_folder(out) as tmp:  # the bundle there stays until the new one is trained and evaluated
        provenance, table = run_pipeline(cfg, tc, tmp, args.work, progress=not args.no_progress)
    print("\n".join([f"handover train-reference: done in {time.perf_counter() - t0:.0f} s", *summary(provenance, args.out, table)]))
    return 0
