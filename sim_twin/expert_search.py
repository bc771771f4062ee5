"""Tuning the scripted expert: a cross-entropy search over :class:`ExpertConfig` in the strict twin,
and the expert's success rate under the training randomization and timing.

``python -m handover.sim_twin.expert_search [--generations G] [--population P] [--episodes N]``
prints the best configuration per generation (progress on stderr). Each candidate runs N episodes
under the original's training randomization, its contract noise and jittered timing (the
conditions the reference policy is evaluated in); its score is the fraction caught. Episodes run
the expert through the contract and the command gate (:class:`ActionController`,
:func:`~handover.sim_twin.episode.run_episode`), from :meth:`Twin.reset`.

Two measures instead of the search: ``--sensitivity N`` prints the default expert's success over N
episodes per part of the training randomization (:data:`COMPONENTS`), each part alone; ``--catcher
N`` its catcher's success over N throws drawn from :data:`THROWS` (:func:`catch_rate`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import numpy as np

from handover.sim_twin.expert import ExpertConfig

# The searched fields and their ranges (ints are rounded).
SPACE = {
    "swing_step": (6, 14),
    "open_offset": (-1, 3),  # open_step = swing_step + open_offset
    "swing_steps": (3, 9),
    "swing_joint2": (-0.09, 0.41),
    "swing_joint3": (-1.0, -0.5),
    "brake": (0.0, 0.8),
    "catch_y": (-0.92, -0.72),
    "catch_z": (0.36, 0.52),
    "close_distance": (0.05, 0.16),
    "close_fraction": (0.4, 0.95),
    "open_fraction": (0.0, 0.5),
    "catch_wrist": (-1.97, -1.17),
    "release_joint3": (-1.0, -0.4),
    "open_index": (0.0, 1.0),
    "open_middle": (0.0, 1.0),
    "open_ring": (0.0, 1.0),
    "open_thumb": (0.0, 1.0),
}
FINGERS = ("open_index", "open_middle", "open_ring", "open_thumb")


def to_config(v: dict) -> ExpertConfig:
    """A point of :data:`SPACE` as an :class:`ExpertConfig`."""
    swing = int(round(v["swing_step"]))
    return ExpertConfig(
        swing_step=swing, open_step=swing + int(round(v["open_offset"])), swing_steps=int(round(v["swing_steps"])),
        swing_joint2=float(v["swing_joint2"]), swing_joint3=float(v["swing_joint3"]), brake=float(v["brake"]),
        catch_point=(0.02, float(v["catch_y"]), float(v["catch_z"])),
        close_distance=float(v["close_distance"]), close_fraction=float(v["close_fraction"]),
        open_fraction=float(v["open_fraction"]), catch_wrist=float(v["catch_wrist"]),
        release_joint3=float(v["release_joint3"]), **{g: float(v[g]) for g in FINGERS},
    )


# The parts of the original's training randomization, for measuring them one at a time: the object's
# mass, friction and scale; the gravity offset; each field of the thrower's ThrowerRandomization; and
# the contract's observation and action noise.
COMPONENTS = ("object", "gravity", "stiffness", "damping", "limits", "link_mass", "link_friction", "noise")
_THROWER_FIELDS = {"stiffness": ("stiffness_scale",), "damping": ("damping_scale",),
                   "limits": ("lower_offset", "upper_offset"), "link_mass": ("link_mass_scale",),
                   "link_friction": ("link_friction_scale",)}


def only_component(params, component: str):
    """``params`` (training-randomized :class:`EpisodeParams`) with every part but ``component`` (one of
    :data:`COMPONENTS`) at its nominal value; "noise" keeps none of them (the noise is not a parameter)."""
    from handover.sim_twin.twin import EpisodeParams

    if component not in COMPONENTS:
        raise ValueError(f"unknown randomization component {component!r}; expected one of {', '.join(COMPONENTS)}")
    if component == "object":
        return EpisodeParams(mass_factor=params.mass_factor, friction_factor=params.friction_factor,
                             scale_factor=params.scale_factor)
    if component == "gravity":
        return EpisodeParams(gravity_offset=params.gravity_offset)
    if component == "noise":
        return EpisodeParams()
    t = params.thrower
    nominal = {"stiffness_scale": (1.0,) * len(t.stiffness_scale), "damping_scale": (1.0,) * len(t.damping_scale),
               "lower_offset": (0.0,) * len(t.lower_offset), "upper_offset": (0.0,) * len(t.upper_offset),
               "link_mass_scale": {k: 1.0 for k in t.link_mass_scale},
               "link_friction_scale": {k: 1.0 for k in t.link_friction_scale}}
    kept = {f: getattr(t, f) for f in _THROWER_FIELDS[component]}
    return EpisodeParams(thrower=dataclasses.replace(t, **{**nominal, **kept}))


# Throws for measuring the catcher alone (world frame): the object's centre and velocity when it is
# set flying, as (mean, standard deviation) per axis in m and m/s: about the expert's nominal
# release (its throws under the training randomization spread 0.2, 0.6 and 0.7 m/s, see the README).
THROWS = {"position": ((0.025, -0.50, 0.52), (0.01, 0.03, 0.03)), "velocity": ((0.0, -1.0, 0.8), (0.05, 0.2, 0.2))}
THROW_STEP = 10  # the control step at which the object is set flying


def _cell():
    """The config, a twin and its devices brought up, for running expert episodes."""
    from handover.runtime.cell_config import load_cell_config
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.twin import Twin

    cfg = load_cell_config()
    twin = Twin(cfg)
    devices = TwinDevices.create(twin)
    devices.bring_up()
    return cfg, twin, devices


class _SetFlying:
    """The expert with its thrower still (no swing) and the object set flying at :data:`THROW_STEP`."""

    def __init__(self, policy, twin):
        self.policy, self.twin = policy, twin
        self.position = self.velocity = None

    def reset(self, params) -> None:
        self.policy.reset(params)

    def act(self, x):
        if x.step == THROW_STEP:
            self.twin.set_object_state(self.position, self.velocity)
        return self.policy.act(x)


def catch_rate(expert: ExpertConfig, seeds: Sequence[int]) -> float:
    """Fraction of throws the expert's catcher holds at the end of the episode. Throw ``i`` and the
    object's mass, friction and scale (the training ranges) are drawn from ``seeds[i]``; no other
    randomization, lockstep timing; the catcher never sees the thrower's swing."""
    from handover.runtime.contract import ContractSpec
    from handover.runtime.contract_state import ContractNoise
    from handover.sim_twin.demonstrations import ActionController
    from handover.sim_twin.episode import run_episode
    from handover.sim_twin.expert import ExpertPolicy
    from handover.sim_twin.success import judge
    from handover.sim_twin.twin import EpisodeParams

    cfg, twin, devices = _cell()
    policy = _SetFlying(ExpertPolicy(cfg, dataclasses.replace(expert, swing_steps=0)), twin)
    controller = ActionController(ContractSpec.from_config(cfg), policy, cfg.goal.center, cfg.object.start_position,
                                  twin=twin, noise=ContractNoise(history=cfg.history_noise))
    caught = 0
    for s in seeds:
        rng = np.random.default_rng([s, 6])
        params = only_component(EpisodeParams.sample_training(rng, twin.thrower_links), "object")
        draw = lambda mean_std: np.asarray(mean_std[0]) + rng.standard_normal(3) * np.asarray(mean_std[1])  # noqa: E731
        policy.position, policy.velocity = draw(THROWS["position"]), draw(THROWS["velocity"])
        twin.reset(params)
        twin.set_timing(None)
        controller.begin_episode(params, rng, goal=cfg.goal.center)
        run_episode(devices, controller, cfg.episode_steps)
        caught += bool(judge(twin).success)
    return caught / len(seeds)


def success_rate(expert: ExpertConfig, seeds: Sequence[int], randomize: bool = True, jitter: bool = True,
                 component: str | None = None) -> float:
    """Fraction of episodes the expert catches; episode ``i`` draws everything from ``seeds[i]``.
    ``component``: only that part of the training randomization (see :func:`only_component`), lockstep
    timing unless ``jitter``; None: all of it (``randomize``) or none."""
    from handover.runtime.contract import ContractSpec
    from handover.runtime.contract_state import ContractNoise
    from handover.sim_twin.demonstrations import ActionController
    from handover.sim_twin.episode import run_episode
    from handover.sim_twin.expert import ExpertPolicy
    from handover.sim_twin.success import judge
    from handover.sim_twin.twin import EpisodeParams, TimingJitter

    cfg, twin, devices = _cell()
    policy = ExpertPolicy(cfg, expert)
    noisy = component == "noise" if component is not None else randomize
    noise = ContractNoise.training(cfg.history_noise) if noisy else ContractNoise(history=cfg.history_noise)
    controller = ActionController(ContractSpec.from_config(cfg), policy, cfg.goal.center, cfg.object.start_position,
                                  twin=twin, noise=noise)
    caught = 0
    for s in seeds:
        rng = lambda k: np.random.default_rng([s, k])  # noqa: E731
        params = EpisodeParams.sample_training(rng(0), twin.thrower_links) if randomize or component else EpisodeParams()
        if component is not None:
            params = only_component(params, component)
        twin.camera.rng = rng(1)
        twin.reset(params)
        twin.set_timing(TimingJitter() if jitter else None, rng(2))
        controller.begin_episode(params, rng(3), goal=cfg.goal.draw(rng(4)))
        run_episode(devices, controller, cfg.episode_steps)
        caught += bool(judge(twin).success)
    return caught / len(seeds)


def _score(args) -> float:
    point, seeds = args
    return success_rate(to_config(point), seeds)


def search(generations: int, population: int, episodes: int, elite: int, seed: int, workers: int) -> dict:
    """Cross-entropy search (independent Gaussians per field, clipped to :data:`SPACE`)."""
    rng = np.random.default_rng(seed)
    names = list(SPACE)
    lo = np.array([SPACE[n][0] for n in names], float)
    hi = np.array([SPACE[n][1] for n in names], float)
    default = ExpertConfig()
    start = {"swing_step": default.swing_step, "open_offset": default.open_step - default.swing_step,
             "swing_steps": default.swing_steps, "swing_joint2": default.swing_joint2,
             "swing_joint3": default.swing_joint3, "brake": default.brake, "catch_y": default.catch_point[1],
             "catch_z": default.catch_point[2], "close_distance": default.close_distance,
             "close_fraction": default.close_fraction, "open_fraction": default.open_fraction,
             "catch_wrist": default.catch_wrist,
             "release_joint3": default.release_joint3, **{g: getattr(default, g) for g in FINGERS}}
    mean = np.array([start[n] for n in names], float)
    std = (hi - lo) / 4
    best = (-1.0, dict(zip(names, mean)))
    with ProcessPoolExecutor(workers) as pool:
        for g in range(generations):
            seeds = [int(v) for v in rng.integers(0, 2**31, episodes)]  # common random numbers per generation
            pts = np.clip(mean + std * rng.standard_normal((population, len(names))), lo, hi)
            pts[0] = np.clip(mean, lo, hi)
            scores = np.array(list(pool.map(_score, [(dict(zip(names, p)), seeds) for p in pts])))
            order = np.argsort(-scores)
            top = pts[order[:elite]]
            mean, std = top.mean(axis=0), np.maximum(top.std(axis=0), (hi - lo) / 50)
            if scores[order[0]] >= best[0]:
                best = (float(scores[order[0]]), dict(zip(names, pts[order[0]])))
            print(f"generation {g + 1}/{generations}: best {scores[order[0]]:.2f}, mean {scores.mean():.2f}, "
                  f"best so far {best[0]:.2f}", file=sys.stderr, flush=True)
    return {"score": best[0], "point": best[1], "config": dataclasses.asdict(to_config(best[1]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--population", type=int, default=24)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--elite", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sensitivity", type=int, metavar="N", default=0,
                   help="instead of searching: the default expert's success over N episodes with nominal physics, "
                        "with each part of the training randomization alone (lockstep) and with all of it")
    p.add_argument("--catcher", type=int, metavar="N", default=0,
                   help="instead of searching: the default expert's catcher alone, over N throws drawn from THROWS")
    args = p.parse_args(argv)
    if args.catcher:
        seeds = range(args.seed, args.seed + args.catcher)
        print(f"catcher alone: {catch_rate(ExpertConfig(), seeds) * len(seeds):.0f} / {len(seeds)} throws held")
        return 0
    if args.sensitivity:
        seeds = range(args.seed, args.seed + args.sensitivity)
        rows = [("nominal", dict(randomize=False, jitter=False))]
        rows += [(c, dict(component=c, jitter=False)) for c in COMPONENTS]
        rows += [("all (training)", dict(jitter=False)), ("all + jitter", dict(jitter=True))]
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [(name, pool.submit(success_rate, ExpertConfig(), seeds, **kw)) for name, kw in rows]
            for name, f in futures:
                print(f"{name:16s} {f.result() * len(seeds):4.0f} / {len(seeds)}", flush=True)
        return 0
    result = search(args.generations, args.population, args.episodes, args.elite, args.seed, args.workers)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
