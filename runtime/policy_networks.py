"""A policy bundle loaded for inference.

The goal estimator runs on its own (its output is part of the actors' input); the actors and the
optional property estimator, whose inputs are all known once the observation is built, run together
in one onnxruntime call (:class:`~handover.runtime.onnx_runner.FusedRunner`).

Both kinds of bundle give the same :class:`Actors` interface (the per-agent 450-number inputs in,
44 actions out): a MAPPO bundle runs its two actors on them (:class:`FusedActors`); a PPO bundle
rebuilds the full 900-number observation from them (:func:`full_observation`) and runs its one policy
(:class:`FusedSingleActor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from handover.runtime.bundle import PPO, Manifest, TensorSpec, load_manifest
from handover.runtime.cell_config import SIDE_DOFS
from handover.runtime.contract import AGENT_INPUT_SIZE, DOFS, FRAME_SIZE, HALF_FRAME, STACK_FRAMES
from handover.runtime.errors import InputError
from handover.runtime.onnx_runner import FusedRunner, NetworkRunner, validate_input

FULL_OBS_SIZE = FRAME_SIZE * STACK_FRAMES  # 900: the input of a PPO policy
_AGENT_INPUTS = {name: TensorSpec(name, ("batch", AGENT_INPUT_SIZE)) for name in ("thrower_in", "catcher_in")}


class Network(Protocol):
    """One network (onnxruntime here; torch in the benchmark)."""

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...

    def warmup(self, n: int = 50) -> None: ...


class Actors(Protocol):
    """Both actors and the optional property estimator, run once per step."""

    property_input_size: Optional[int]  # 20*47 or 20*91; None without a property estimator

    def run(self, thrower_in: np.ndarray, catcher_in: np.ndarray, window: Optional[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Return the 44 raw actions (thrower ++ catcher) and the property estimate (or None)."""
        ...

    def reset(self) -> None: ...

    def warmup(self, n: int = 50) -> None: ...


class _RunnerGroup:
    """Reset and warm-up of several runners at once: subclasses list them in :meth:`_all`."""

    def _all(self) -> list:
        raise NotImplementedError

    def reset(self) -> None:
        for n in self._all():
            n.reset()

    def warmup(self, n: int = 50) -> None:
        for net in self._all():
            net.warmup(n)


class SeparateActors(_RunnerGroup):
    """Actors (and property estimator) as separate :class:`Network` objects, called one after another."""

    def __init__(self, thrower: Network, catcher: Network, property_estimator: Optional[Network] = None,
                 property_input_size: Optional[int] = None):
        self.thrower, self.catcher, self.property_estimator = thrower, catcher, property_estimator
        self.property_input_size = property_input_size

    def run(self, thrower_in, catcher_in, window):
        action = np.empty(DOFS, dtype=np.float32)
        action[:SIDE_DOFS] = self.thrower.run(thrower_in)
        action[SIDE_DOFS:] = self.catcher.run(catcher_in)
        props = None
        if self.property_estimator is not None and window is not None:
            props = np.asarray(self.property_estimator.run(window), dtype=np.float32)
        return action, props

    def _all(self):
        return [n for n in (self.thrower, self.catcher, self.property_estimator) if n is not None]


class FusedActors:
    """Actors (and property estimator) of a bundle in one onnxruntime session."""

    def __init__(self, folder: Path, manifest: Manifest):
        roles = [r for r in ("thrower_actor", "catcher_actor", "property_estimator") if r in manifest.networks]
        self.runner = FusedRunner(folder, [manifest.networks[r] for r in roles])
        prop = manifest.networks.get("property_estimator")
        self.property_input_size = int(np.prod(prop.main_input.sample_shape)) if prop else None

    def run(self, thrower_in, catcher_in, window):
        feeds = {"thrower_actor": thrower_in, "catcher_actor": catcher_in}
        if self.property_input_size is not None:
            feeds["property_estimator"] = window
        out = self.runner.run(feeds)
        action = np.concatenate([out["thrower_actor"], out["catcher_actor"]]).astype(np.float32, copy=False)
        return action, out.get("property_estimator")

    def reset(self) -> None:
        self.runner.reset()

    def warmup(self, n: int = 50) -> None:
        self.runner.warmup(n)


def full_observation(thrower_in: np.ndarray, catcher_in: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The 900-number observation rebuilt from the two per-agent inputs (float32, shape (900,)).

    The per-agent inputs are ``thrower = obs[0:150] ++ obs[300:450] ++ obs[600:750]`` and
    ``catcher = obs[150:300] ++ obs[450:600] ++ obs[750:900]`` of the stacked observation
    ``[current 300, previous 300, oldest 300]`` (each frame: thrower part 150, catcher part 150), so
    frame k is ``thrower[150k:150k+150] ++ catcher[150k:150k+150]``. Clipping to [-5, 5] commutes with
    this permutation: clipped inputs give the clipped observation, exactly.

    ``out`` (900 float32, contiguous) is filled and returned when given (no allocation per step).
    Raises :class:`InputError` naming the input for a wrong shape, dtype or a non-finite value.
    """
    t = _agent_input("thrower_in", thrower_in)
    c = _agent_input("catcher_in", catcher_in)
    obs = np.empty(FULL_OBS_SIZE, dtype=np.float32) if out is None else out
    frames = obs.reshape(STACK_FRAMES, 2, HALF_FRAME)  # a view: (frame, agent, 150)
    frames[:, 0] = t.reshape(STACK_FRAMES, HALF_FRAME)
    frames[:, 1] = c.reshape(STACK_FRAMES, HALF_FRAME)
    return obs


def _agent_input(name: str, x: np.ndarray) -> np.ndarray:
    """One per-agent input as 450 float32 values, or :class:`InputError` (``policy: input 'thrower_in' ...``)."""
    xb = validate_input("policy", _AGENT_INPUTS[name], x)
    if xb.shape[0] != 1:
        raise InputError(f"policy: input {name!r}: one sample at a time, got batch {xb.shape[0]}")
    return xb[0]


class SingleActor(_RunnerGroup):
    """One policy over both hands (PPO) and the optional property estimator, as separate
    :class:`Network` objects: the policy maps the rebuilt 900-number observation to the 44 actions."""

    def __init__(self, policy: Network, property_estimator: Optional[Network] = None,
                 property_input_size: Optional[int] = None):
        self.policy, self.property_estimator = policy, property_estimator
        self.property_input_size = property_input_size
        self._obs = np.empty(FULL_OBS_SIZE, dtype=np.float32)

    def run(self, thrower_in, catcher_in, window):
        action = np.asarray(self.policy.run(full_observation(thrower_in, catcher_in, self._obs)), dtype=np.float32)
        props = None
        if self.property_estimator is not None and window is not None:
            props = np.asarray(self.property_estimator.run(window), dtype=np.float32)
        return action.reshape(DOFS), props

    def _all(self):
        return [n for n in (self.policy, self.property_estimator) if n is not None]


class FusedSingleActor:
    """The PPO policy (and property estimator) of a bundle in one onnxruntime session.

    Chosen by :meth:`PolicyNetworks.load` over :class:`SingleActor` with one runner per network:
    with a property estimator it saves one onnxruntime call per step. Measured per ``run`` on this
    project's 2-core machine (6 x 2000 calls, interleaved, p50): with the property estimator 0.42-0.59 ms
    fused against 0.48-0.64 ms separate; without it both are the same single call, 0.34-0.40 ms.
    ``handover benchmark --algo ppo`` times the whole step both ways.
    """

    def __init__(self, folder: Path, manifest: Manifest):
        roles = [r for r in ("policy", "property_estimator") if r in manifest.networks]
        self.runner = FusedRunner(folder, [manifest.networks[r] for r in roles])
        prop = manifest.networks.get("property_estimator")
        self.property_input_size = int(np.prod(prop.main_input.sample_shape)) if prop else None
        self._obs = np.empty(FULL_OBS_SIZE, dtype=np.float32)

    def run(self, thrower_in, catcher_in, window):
        feeds = {"policy": full_observation(thrower_in, catcher_in, self._obs)}
        if self.property_input_size is not None:
            feeds["property_estimator"] = window
        out = self.runner.run(feeds)
        return out["policy"].astype(np.float32, copy=False), out.get("property_estimator")

    def reset(self) -> None:
        self.runner.reset()

    def warmup(self, n: int = 50) -> None:
        self.runner.warmup(n)


def load_actors(folder: str | Path, manifest: Manifest) -> Actors:
    """The actors of the bundle in ``folder`` as its manifest's algorithm needs them (not warmed up)."""
    folder = Path(folder)
    return FusedSingleActor(folder, manifest) if manifest.algorithm == PPO else FusedActors(folder, manifest)


def load_goal_estimator(folder: str | Path, manifest: Optional[Manifest] = None, warmup: int = 50) -> NetworkRunner:
    """Only the goal estimator of the bundle in ``folder``, warmed up ``warmup`` times."""
    folder = Path(folder)
    net = (manifest or load_manifest(folder)).networks["goal_estimator"]
    runner = NetworkRunner(folder / net.file, net)
    runner.warmup(warmup)
    return runner


@dataclass
class PolicyNetworks:
    goal_estimator: Network
    actors: Actors
    manifest: Optional[Manifest] = None
    folder: Optional[Path] = None

    @staticmethod
    def load(folder: str | Path, warmup: int = 50) -> "PolicyNetworks":
        """Load the bundle in ``folder`` for onnxruntime and warm every session up ``warmup`` times.
        The actors follow the manifest's algorithm (:func:`load_actors`)."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        actors = load_actors(folder, manifest)
        actors.warmup(warmup)
        return PolicyNetworks(load_goal_estimator(folder, manifest, warmup), actors, manifest, folder)

    def reset(self) -> None:
        """Clear recurrent state (episode start)."""
        self.goal_estimator.reset()
        self.actors.reset()

    def warmup(self, n: int = 50) -> None:
        self.goal_estimator.warmup(n)
        self.actors.warmup(n)
