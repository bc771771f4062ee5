"""A policy bundle loaded for inference.

The goal estimator runs on its own (its output is part of the actors' input); the two actors and
the optional property estimator, whose inputs are all known once the observation is built, run
together in one onnxruntime call (:class:`~handover.runtime.onnx_runner.FusedRunner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from handover.runtime.bundle import Manifest, load_manifest
from handover.runtime.cell_config import SIDE_DOFS
from handover.runtime.contract import DOFS
from handover.runtime.onnx_runner import FusedRunner, NetworkRunner


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


class SeparateActors:
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

    def reset(self) -> None:
        for n in self._all():
            n.reset()

    def warmup(self, n: int = 50) -> None:
        for net in self._all():
            net.warmup(n)


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
        """Load the bundle in ``folder`` for onnxruntime and warm every session up ``warmup`` times."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        actors = FusedActors(folder, manifest)
        actors.warmup(warmup)
        return PolicyNetworks(load_goal_estimator(folder, manifest, warmup), actors, manifest, folder)

    def reset(self) -> None:
        """Clear recurrent state (episode start)."""
        self.goal_estimator.reset()
        self.actors.reset()

    def warmup(self, n: int = 50) -> None:
        self.goal_estimator.warmup(n)
        self.actors.warmup(n)
