"""``handover benchmark``: latency of the policy step, onnxruntime against torch eager.

Every row runs the full :class:`~handover.runtime.policy_step.PolicyStep` (history, goal estimator,
frame, stack, the actors, action mapping) on one thread, with the same networks: randomly
initialised networks with the original module trees, exported to a temporary bundle for
onnxruntime and run in torch eager from the same weights. ``--algo mappo`` (default): two actors
(``layer_N`` 2, hidden 512); ``--algo ppo``: one policy 900-1024-1024-512-44. Rows: ``onnxruntime``
(the actors in one session, as :meth:`PolicyNetworks.load` runs them), ``onnxruntime, separate
sessions`` (one runner per network, for comparison) and ``torch eager``. An episode reset every 30
steps is not timed. Prints p50/p99/max per step and the torch/onnxruntime ratio.
Target: onnxruntime p99 under 0.5 ms on one core.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from handover.runtime.cli_values import positive_int
from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config
from handover.runtime.contract import ContractSpec
from handover.runtime.bundle import PPO, load_manifest
from handover.runtime.onnx_runner import NetworkRunner
from handover.runtime.policy_networks import PolicyNetworks, SeparateActors, SingleActor, load_goal_estimator
from handover.runtime.policy_step import PolicyStep

TARGET_P99_MS = 0.5


class TorchNetwork:
    """A torch module behind the same ``run/reset/warmup`` interface as the onnxruntime runner."""

    def __init__(self, module, input_size: int, state_shape: Optional[tuple[int, ...]] = None):
        import torch

        self.torch = torch
        self.module = module.eval()
        self.input_size = input_size
        self.state_shape = state_shape
        self.state = None
        self.reset()

    def reset(self) -> None:
        if self.state_shape is not None:
            self.state = self.torch.zeros((1, *self.state_shape))

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(1, -1)
            if self.state is None:
                y = self.module(t)
            else:
                y, self.state = self.module(t, self.state)
            return y.numpy()[0]

    def warmup(self, n: int = 50) -> None:
        for _ in range(n):
            self.run(np.zeros(self.input_size, np.float32))
        self.reset()


def make_random_checkpoints(folder: Path, seed: int = 0, layer_n: int = 2) -> dict[str, Path]:
    """Save randomly initialised networks with the original module trees as ``.pt`` checkpoints."""
    import torch

    from handover.runtime.networks import goal_estimator_from_state_dict, make_actor

    torch.manual_seed(seed)
    paths = {}
    for name in ("actor_agent0", "actor_agent1"):
        paths[name] = folder / f"{name}.pt"
        torch.save(make_actor(layer_N=layer_n).state_dict(), paths[name])
    goal_sd = random_estimator_state_dict(60, 3)
    goal_estimator_from_state_dict(goal_sd, "generated")  # checks the tree
    paths["model"] = folder / "model.pt"
    torch.save(goal_sd, paths["model"])
    return paths


def make_random_ppo_checkpoints(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Save a randomly initialised PPO actor-critic (900-1024-1024-512-44, the original module tree) as
    ``model_0.pt`` and a goal estimator as ``model.pt``; returns ``{"ppo": ..., "model": ...}``."""
    import torch

    from handover.runtime.networks import goal_estimator_from_state_dict, make_ppo

    torch.manual_seed(seed)
    paths = {"ppo": folder / "model_0.pt", "model": folder / "model.pt"}
    torch.save(make_ppo().state_dict(), paths["ppo"])
    goal_sd = random_estimator_state_dict(60, 3)
    goal_estimator_from_state_dict(goal_sd, "generated")  # checks the tree
    torch.save(goal_sd, paths["model"])
    return paths


def random_estimator_state_dict(n_in: int, n_out: int, bias_std: float = 0.01) -> dict:
    """Random weights for the estimators' tree (``linear1..3`` 512-256-128, ``output_layer``),
    scaled so activations stay O(1); uses torch's global seed."""
    import torch

    sizes = {"linear1": (512, n_in), "linear2": (256, 512), "linear3": (128, 256), "output_layer": (n_out, 128)}
    sd = {}
    for layer, (rows, cols) in sizes.items():
        sd[f"{layer}.weight"] = torch.randn(rows, cols) / np.sqrt(cols)
        sd[f"{layer}.bias"] = torch.randn(rows) * bias_std
    return sd


def torch_networks(paths: dict[str, Path]) -> PolicyNetworks:
    """The checkpoints of :func:`make_random_checkpoints` (or, with a ``"ppo"`` entry, of
    :func:`make_random_ppo_checkpoints`) in torch eager behind the runtime's interfaces."""
    import torch

    from handover.runtime.networks import actor_from_state_dict, goal_estimator_from_state_dict, ppo_from_state_dict

    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    goal, _ = goal_estimator_from_state_dict(load(paths["model"]), str(paths["model"]))
    if "ppo" in paths:
        policy, info = ppo_from_state_dict(load(paths["ppo"]), str(paths["ppo"]))
        return PolicyNetworks(TorchNetwork(goal, 60), SingleActor(TorchNetwork(policy, info["obs_dim"])))
    actors = [actor_from_state_dict(load(paths[n]), str(paths[n]))[0] for n in ("actor_agent0", "actor_agent1")]
    return PolicyNetworks(TorchNetwork(goal, 60), SeparateActors(TorchNetwork(actors[0], 450), TorchNetwork(actors[1], 450)))


def separate_networks(folder: Path) -> PolicyNetworks:
    """The bundle in ``folder`` with one onnxruntime session per network (no fusing), for comparison."""
    manifest = load_manifest(folder)
    runners = {role: NetworkRunner(folder / net.file, net) for role, net in manifest.networks.items()}
    prop = manifest.networks.get("property_estimator")
    size = int(np.prod(prop.main_input.sample_shape)) if prop else None
    if manifest.algorithm == PPO:
        actors = SingleActor(runners["policy"], runners.get("property_estimator"), size)
    else:
        actors = SeparateActors(runners["thrower_actor"], runners["catcher_actor"], runners.get("property_estimator"), size)
    return PolicyNetworks(load_goal_estimator(folder, manifest), actors, manifest, folder)


def time_steps(step: PolicyStep, steps: int, episode: int = 30, seed: int = 1) -> np.ndarray:
    """Per-step wall time in seconds over ``steps`` steps (resets between episodes not timed)."""
    rng = np.random.default_rng(seed)
    spec = step.spec
    q = np.asarray(spec.default, np.float32)
    goal = np.array([0.025, -0.9, 0.45], np.float32)
    times = np.empty(steps)
    clock = time.perf_counter
    step.reset()
    for i in range(steps):
        k = i % episode
        if k == 0 and i:
            step.reset()
        tq = q[:22] + rng.normal(0, 0.01, 22).astype(np.float32)
        cq = q[22:] + rng.normal(0, 0.01, 22).astype(np.float32)
        obj = np.array([0.025, -0.38 - 0.03 * k, 0.45 + 0.01 * k], np.float32)
        t0 = clock()
        step.step(tq, cq, obj, goal)
        times[i] = clock() - t0
    return times


def summarize(times: np.ndarray) -> dict[str, float]:
    ms = times * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def run_benchmark(
    steps: int = 10_000, bundle: Optional[Path] = None, out=sys.stdout, algo: str = "mappo"
) -> dict[str, dict[str, float]]:
    """Time the policy step per backend (see the module docstring); ``algo`` is ``"mappo"`` or ``"ppo"``.
    Returns ``{row: {"p50", "p99", "max", "mean"}}`` in ms."""
    import torch

    torch.set_num_threads(1)
    spec = ContractSpec.from_config(load_cell_config(DEFAULT_CONFIG_PATH))
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from handover.runtime.export import export_bundle, export_ppo_bundle

        if algo == PPO:
            paths = make_random_ppo_checkpoints(tmp)
            export_ppo_bundle(tmp / "bundle", paths["ppo"], paths["model"])
        else:
            paths = make_random_checkpoints(tmp)
            export_bundle(tmp / "bundle", paths["actor_agent0"], paths["actor_agent1"], paths["model"])
        rows = {
            "onnxruntime": PolicyNetworks.load(tmp / "bundle"),
            "onnxruntime, separate sessions": separate_networks(tmp / "bundle"),
            "torch eager": torch_networks(paths),
        }
        if bundle is not None:
            rows[f"onnxruntime ({bundle})"] = PolicyNetworks.load(bundle)
        for name, nets in rows.items():
            nets.warmup(200)
            print(f"timing {name}: {steps} steps ...", file=out, flush=True)
            results[name] = summarize(time_steps(PolicyStep(spec, nets), steps))
    print(f"\npolicy step latency ({algo}), {steps} steps, one thread (ms)", file=out)
    print(f"{'backend':<32}{'p50':>9}{'p99':>9}{'max':>9}{'mean':>9}", file=out)
    for name, r in results.items():
        print(f"{name:<32}{r['p50']:9.4f}{r['p99']:9.4f}{r['max']:9.4f}{r['mean']:9.4f}", file=out)
    ort_r, torch_r = results["onnxruntime"], results["torch eager"]
    print(
        f"\ntorch eager / onnxruntime: p50 x{torch_r['p50'] / ort_r['p50']:.2f}, p99 x{torch_r['p99'] / ort_r['p99']:.2f}",
        file=out,
    )
    verdict = "met" if ort_r["p99"] < TARGET_P99_MS else "NOT met"
    print(f"target onnxruntime p99 < {TARGET_P99_MS} ms: {verdict} ({ort_r['p99']:.4f} ms)", file=out)
    return results


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="policy step latency: onnxruntime vs torch eager (needs torch)")
    p.add_argument("--steps", type=positive_int, default=10_000, help="timed steps per backend (default: %(default)s)")
    p.add_argument("--bundle", type=Path, default=None, help="also time this bundle with onnxruntime")
    p.add_argument("--algo", choices=("mappo", "ppo"), default="mappo",
                   help="networks to time: two MAPPO actors or one PPO policy (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("handover benchmark compares against torch eager and needs torch: "
              "pip install torch==2.13.0 (CPU) or pip install 'handover[export]'", file=sys.stderr)
        return 2
    run_benchmark(args.steps, args.bundle, algo=args.algo)
    return 0
