"""Policy bundles: a folder with ONNX networks and a ``manifest.json`` describing them.

Layout of a MAPPO bundle (``"algorithm": "mappo"``, one actor per agent)::

    BUNDLE/
      manifest.json
      thrower_actor.onnx      obs (batch, 450)  -> action (batch, 22)    [raw mean, unclipped]
      catcher_actor.onnx      obs (batch, 450)  -> action (batch, 22)
      goal_estimator.onnx     history (batch, 60) -> goal (batch, 3)     [relative to thrower base, m]
      property_estimator.onnx window (batch, 20*47 or 20*91) -> properties (batch, P)   [optional]

A PPO bundle (``"algorithm": "ppo"``, one policy over both hands) has ``policy.onnx``
``obs (batch, 900) -> action (batch, 44)`` (the full 3-frame observation clipped to [-5, 5],
[current 300, previous 300, oldest 300]; thrower ++ catcher actions) instead of the two actors, and
the same goal and property estimators. A manifest without ``algorithm`` is a MAPPO bundle.

A recurrent actor has one more input/output pair carrying its hidden state
(``state_in``/``state_out``, shape ``(batch, layers, hidden)``); the manifest names it under ``state``.
The manifest also records the contract version and the provenance (source files and their
SHA-256, tool versions, time). ``"batch"`` in a shape marks the dynamic batch axis.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from handover.runtime.contract import CONTRACT_VERSION

BUNDLE_FORMAT = "handover-bundle/1"
MANIFEST_NAME = "manifest.json"

MAPPO, PPO = "mappo", "ppo"  # the training algorithms a bundle can come from
OPTIONAL_ROLES = ("property_estimator",)
# Required roles per algorithm; every algorithm may add the OPTIONAL_ROLES.
ALGORITHM_ROLES = {
    MAPPO: ("thrower_actor", "catcher_actor", "goal_estimator"),
    PPO: ("policy", "goal_estimator"),
}
REQUIRED_ROLES = ALGORITHM_ROLES[MAPPO]
ROLES = ("thrower_actor", "catcher_actor", "policy", "goal_estimator") + OPTIONAL_ROLES


class BundleError(ValueError):
    """A bundle folder or its manifest is missing, inconsistent or incompatible."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Any, ...]  # ints, or "batch" for the dynamic batch axis
    dtype: str = "float32"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape without the leading batch axis."""
        return tuple(self.shape[1:])


@dataclass(frozen=True)
class StateSpec:
    """A recurrent network's hidden state: fed back from ``output`` to ``input``, zeroed at reset."""

    input: str
    output: str
    shape: tuple[Any, ...]  # ("batch", layers, hidden)


@dataclass(frozen=True)
class NetworkSpec:
    role: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: Optional[StateSpec] = None
    # What each entry of the main output means, e.g. ("mass",) for a property estimator.
    output_labels: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)  # architecture facts (layer_N, hidden size, ...)

    @property
    def main_input(self) -> TensorSpec:
        """The input that is not the recurrent state."""
        return next(t for t in self.inputs if self.state is None or t.name != self.state.input)

    @property
    def main_output(self) -> TensorSpec:
        return next(t for t in self.outputs if self.state is None or t.name != self.state.output)


@dataclass(frozen=True)
class Manifest:
    contract_version: str
    networks: dict[str, NetworkSpec]
    provenance: dict = field(default_factory=dict)
    format: str = BUNDLE_FORMAT
    algorithm: str = MAPPO  # MAPPO (two actors) or PPO (one policy); see the module docstring

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(manifest.to_json())
    return path


def load_manifest(folder: str | Path) -> Manifest:
    """Read and check ``folder/manifest.json``; every network file it names must exist."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise BundleError(f"{folder}: bundle folder not found")
    if not path.is_file():
        raise BundleError(f"{path}: manifest not found (is {folder} a policy bundle?)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from None
    try:
        manifest = _manifest_from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{path}: malformed manifest: {_malformed(raw, exc)}") from None
    if manifest.format != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {manifest.format!r}, expected {BUNDLE_FORMAT!r}")
    if manifest.contract_version != CONTRACT_VERSION:
        raise BundleError(
            f"{path}: contract_version {manifest.contract_version!r} does not match this runtime's "
            f"{CONTRACT_VERSION!r}"
        )
    if manifest.algorithm not in ALGORITHM_ROLES:
        raise BundleError(f"{path}: algorithm {manifest.algorithm!r} unknown (known: {list(ALGORITHM_ROLES)})")
    required = ALGORITHM_ROLES[manifest.algorithm]
    for role in required:
        if role not in manifest.networks:
            raise BundleError(f"{path}: networks.{role} missing (required: {list(required)})")
    for role, net in manifest.networks.items():
        if role not in required + OPTIONAL_ROLES:
            why = "unknown role" if role not in ROLES else f"not a role of a {manifest.algorithm} bundle"
            raise BundleError(f"{path}: networks.{role}: {why} (allowed: {list(required + OPTIONAL_ROLES)})")
        if not (folder / net.file).is_file():
            raise BundleError(f"{path}: networks.{role}.file: {folder / net.file} not found")
    return manifest


def _malformed(raw, exc: Exception) -> str:
    """Which part of a manifest is malformed, for a one-line error."""
    if not isinstance(raw, dict):
        return f"expected a JSON object at the top, got {type(raw).__name__}"
    nets = raw.get("networks")
    if not isinstance(nets, dict):
        return f"'networks' must be an object of role -> network, got {type(nets).__name__}"
    bad = [r for r, n in nets.items() if not isinstance(n, dict)]
    if bad:
        return f"networks.{bad[0]} must be an object, got {type(nets[bad[0]]).__name__}"
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return f"{type(exc).__name__}: {exc}"


def _tensor(d: dict) -> TensorSpec:
    return TensorSpec(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"))


def _manifest_from_dict(raw: dict) -> Manifest:
    networks = {}
    for role, n in raw["networks"].items():
        state = n.get("state")
        networks[role] = NetworkSpec(
            role=n.get("role", role),
            file=n["file"],
            inputs=tuple(_tensor(t) for t in n["inputs"]),
            outputs=tuple(_tensor(t) for t in n["outputs"]),
            state=StateSpec(state["input"], state["output"], tuple(state["shape"])) if state else None,
            output_labels=tuple(n.get("output_labels", ())),
            info=dict(n.get("info", {})),
        )
    return Manifest(
        contract_version=raw["contract_version"],
        networks=networks,
        provenance=dict(raw.get("provenance", {})),
        format=raw.get("format", ""),
        algorithm=raw.get("algorithm", MAPPO),
    )
