"""``handover export``: training checkpoints (``.pt`` state dicts) to an ONNX policy bundle.

Two kinds of policy, as the Dynamic Handover code base trains them:

- MAPPO (``--thrower actor_agent0.pt --catcher actor_agent1.pt``): one actor per agent, each on its
  450-number input; the bundle holds ``thrower_actor.onnx`` and ``catcher_actor.onnx``.
- PPO (``--ppo model_N.pt``): one actor-critic over the full 900-number observation with 44 actions;
  the bundle holds ``policy.onnx`` (``obs (batch, 900) -> action (batch, 44)``).

Both take the goal estimator (``--goal``) and optionally the property estimator (``--property``);
the manifest records the algorithm (``mappo`` or ``ppo``).

The networks are rebuilt with the original module trees (:mod:`handover.runtime.networks`), loaded
strictly, exported with the legacy TorchScript-based ONNX exporter (dynamic batch axis), and each
exported file is checked against torch with onnxruntime on random inputs before the bundle is
written. A failed export leaves the output folder as it was: files are built in a temporary folder
inside it and moved in at the end, the manifest last.

torch and onnx are only needed here (``pip install 'handover[export]'``); they are imported lazily
so that ``handover --help`` works without them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from handover.runtime.bundle import (
    MANIFEST_NAME,
    MAPPO,
    PPO,
    ROLES,
    Manifest,
    NetworkSpec,
    StateSpec,
    TensorSpec,
    load_manifest,
    write_manifest,
)
from handover.runtime.contract import (
    AGENT_ACTION_SIZE,
    AGENT_INPUT_SIZE,
    CONTRACT_VERSION,
    DOFS,
    FRAME_SIZE,
    HISTORY_LEN,
    OBS_CLIP,
    STACK_FRAMES,
)
from handover.runtime.errors import InputError
from handover.runtime.files import atomic_folder, input_file, output_folder

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

BATCH = "batch"  # name of the dynamic batch axis in the ONNX files and the manifest
DEFAULT_OPSET = 17
DEFAULT_PROPERTY_LABELS = ("mass",)
TOLERANCE = 1e-5  # max |onnxruntime - torch| accepted by the export check
STATE_IN, STATE_OUT = "state_in", "state_out"
PPO_INPUT_SIZE = FRAME_SIZE * STACK_FRAMES  # 900: the full stacked observation
PPO_ACTION_SIZE = DOFS  # 44: thrower ++ catcher

ROLE_FILES = {role: f"{role}.onnx" for role in ROLES}  # thrower_actor.onnx, ..., policy.onnx, ...
# Main input/output names per role.
ROLE_IO = {
    "thrower_actor": ("obs", "action"),
    "catcher_actor": ("obs", "action"),
    "policy": ("obs", "action"),
    "goal_estimator": ("history", "goal"),
    "property_estimator": ("window", "properties"),
}
# Half-range of the uniform random inputs of the export check, per main input (obs is clipped to
# [-5, 5] by the contract; histories are metres, windows mix metres, radians and N*m).
_CHECK_INPUT_RANGE = {"obs": OBS_CLIP, "history": 1.0, "window": 3.0}
_CHECK_BATCHES = (1, 7)  # batch sizes of the export check (1 = deployment, 7 = the dynamic axis)
_CHECK_STEPS = 4  # recurrent actors: time steps per check, hidden state fed back


class ExportCheckError(RuntimeError):
    """An exported ONNX file does not reproduce its torch network (a tooling bug, not an input error)."""


@dataclass
class _Network:
    """A network rebuilt from its checkpoint, ready to export."""

    spec: NetworkSpec
    module: "nn.Module"
    source: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _network_spec(
    role: str,
    in_size: int,
    out_size: int,
    info: dict[str, Any],
    state_shape: Optional[tuple[int, int]] = None,
    labels: Sequence[str] = (),
) -> NetworkSpec:
    """Manifest entry of one network; ``state_shape`` = per-sample hidden state (layers, hidden) if recurrent."""
    in_name, out_name = ROLE_IO[role]
    inputs = [TensorSpec(in_name, (BATCH, in_size))]
    outputs = [TensorSpec(out_name, (BATCH, out_size))]
    state = None
    if state_shape is not None:
        shape = (BATCH, *state_shape)
        inputs.append(TensorSpec(STATE_IN, shape))
        outputs.append(TensorSpec(STATE_OUT, shape))
        state = StateSpec(STATE_IN, STATE_OUT, shape)
    return NetworkSpec(role, ROLE_FILES[role], tuple(inputs), tuple(outputs), state, tuple(labels), info)


def _require(ok: bool, source: Path, message: str) -> None:
    if not ok:
        raise InputError(f"{source}: {message}")


def _build(role: str, source: Path, property_labels: Sequence[str]) -> _Network:
    """Load ``source`` as the network of ``role`` and check it against the contract sizes."""
    from handover.runtime import networks

    sd = networks.load_checkpoint(source)
    if role.endswith("_actor"):
        actor, info = networks.actor_from_state_dict(sd, str(source))
        _require(
            info["obs_dim"] == AGENT_INPUT_SIZE,
            source,
            f"{role} takes {info['obs_dim']} inputs, the contract's per-agent observation has {AGENT_INPUT_SIZE}",
        )
        _require(
            info["act_dim"] == AGENT_ACTION_SIZE,
            source,
            f"{role} gives {info['act_dim']} actions, the contract has {AGENT_ACTION_SIZE} per agent",
        )
        state_shape = actor.state_shape if actor.recurrent else None
        return _Network(_network_spec(role, info["obs_dim"], info["act_dim"], info, state_shape), actor, source)
    if role == "policy":
        net, info = networks.ppo_from_state_dict(sd, str(source))
        _require(
            info["obs_dim"] == PPO_INPUT_SIZE,
            source,
            f"PPO policy takes {info['obs_dim']} inputs, the contract's stacked observation has {PPO_INPUT_SIZE}",
        )
        _require(
            info["act_dim"] == PPO_ACTION_SIZE,
            source,
            f"PPO policy gives {info['act_dim']} actions, the contract has {PPO_ACTION_SIZE} (both hands)",
        )
        return _Network(_network_spec(role, info["obs_dim"], info["act_dim"], info), net, source)
    if role == "goal_estimator":
        net, info = networks.goal_estimator_from_state_dict(sd, str(source))
        history_size = 3 * HISTORY_LEN
        _require(
            info["input_dim"] == history_size,
            source,
            f"goal estimator takes {info['input_dim']} inputs, the contract's object history has {history_size}",
        )
        _require(info["output_dim"] == 3, source, f"goal estimator gives {info['output_dim']} outputs, expected 3 (x, y, z)")
        return _Network(_network_spec(role, info["input_dim"], 3, info, labels=("x", "y", "z")), net, source)
    # role == "property_estimator"
    net, info = networks.property_estimator_from_state_dict(sd, str(source))
    _require(
        len(property_labels) == info["output_dim"],
        source,
        f"property estimator gives {info['output_dim']} outputs, {len(property_labels)} labels were given "
        f"({', '.join(property_labels)})",
    )
    spec = _network_spec(role, info["input_dim"], info["output_dim"], info, labels=property_labels)
    return _Network(spec, net, source)


def _random_input(spec: TensorSpec, batch: int, gen: "torch.Generator") -> "Tensor":
    import torch

    half = _CHECK_INPUT_RANGE.get(spec.name, 1.0)
    return (torch.rand((batch, *spec.sample_shape), generator=gen) * 2.0 - 1.0) * half


def _export_onnx(net: _Network, path: Path, opset: int) -> None:
    import torch

    spec = net.spec
    gen = torch.Generator().manual_seed(0)
    args = tuple(_random_input(t, 2, gen) for t in spec.inputs)
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (no onnxscript dependency); its deprecation notices
        # and the tracer's notes on nn.GRU's constant size checks are expected. The result is checked
        # against torch by check_onnx_against_torch.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*", category=UserWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            net.module,
            args,
            str(path),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes={t.name: {0: BATCH} for t in spec.inputs + spec.outputs},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def check_onnx_against_torch(module: "nn.Module", spec: NetworkSpec, path: Path, seed: int = 0) -> float:
    """Run ``path`` with onnxruntime and ``module`` with torch on the same random inputs; return the
    largest absolute difference over all outputs. Recurrent networks are stepped for a few time steps
    from a zero state, the state fed back. Raises :class:`ExportCheckError` above :data:`TOLERANCE`."""
    import onnx
    import onnxruntime as ort
    import torch

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    output_names = [t.name for t in spec.outputs]
    worst = 0.0
    for batch in _CHECK_BATCHES:
        state = torch.zeros((batch, *spec.state.shape[1:])) if spec.state is not None else None
        for _ in range(_CHECK_STEPS if state is not None else 1):
            args = (_random_input(spec.main_input, batch, gen),) + ((state,) if state is not None else ())
            with torch.no_grad():
                ref = module(*args)
            refs = ref if isinstance(ref, tuple) else (ref,)
            got = session.run(output_names, {t.name: a.numpy() for t, a in zip(spec.inputs, args)})
            for name, r, g in zip(output_names, refs, got):
                if tuple(g.shape) != tuple(r.shape):
                    raise ExportCheckError(f"{path}: output {name!r} has shape {g.shape} in onnxruntime, {tuple(r.shape)} in torch")
                worst = max(worst, float(abs(torch.from_numpy(g) - r).max()))
            state = refs[1] if state is not None else None
    if not worst <= TOLERANCE:
        raise ExportCheckError(
            f"{path}: onnxruntime and torch differ by up to {worst:.3g} on {spec.role} (tolerance {TOLERANCE:g})"
        )
    return worst


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_bundle(
    out_dir: str | Path,
    thrower: str | Path,
    catcher: str | Path,
    goal: str | Path,
    property: Optional[str | Path] = None,  # noqa: A002 (the CLI option's name)
    property_labels: Sequence[str] = DEFAULT_PROPERTY_LABELS,
    opset: int = DEFAULT_OPSET,
) -> Manifest:
    """Export MAPPO checkpoints to a bundle in ``out_dir`` (created if needed) and return its manifest.

    Args:
        thrower, catcher: actor state dicts of agent 0 and agent 1 (``actor_agent0.pt``, ``actor_agent1.pt``).
        goal: goal (trajectory) estimator state dict (``model.pt``).
        property: optional property estimator state dict.
        property_labels: what each property-estimator output is, e.g. ``("mass",)``.
        opset: ONNX opset of the exported files.

    Raises :class:`InputError` for a missing or mismatching checkpoint, :class:`ExportCheckError` if an
    exported file does not reproduce torch within :data:`TOLERANCE`.
    """
    sources = {"thrower_actor": thrower, "catcher_actor": catcher, "goal_estimator": goal, "property_estimator": property}
    return _export(Path(out_dir), MAPPO, sources, property_labels, opset)


def export_ppo_bundle(
    out_dir: str | Path,
    ppo: str | Path,
    goal: str | Path,
    property: Optional[str | Path] = None,  # noqa: A002 (the CLI option's name)
    property_labels: Sequence[str] = DEFAULT_PROPERTY_LABELS,
    opset: int = DEFAULT_OPSET,
) -> Manifest:
    """Export a PPO checkpoint (one policy over both hands) to a bundle in ``out_dir``; see :func:`export_bundle`.

    Args:
        ppo: the PPO actor-critic state dict (``model_<iteration>.pt``): 900 inputs, 44 actions.
        goal, property, property_labels, opset: as for :func:`export_bundle`.
    """
    sources = {"policy": ppo, "goal_estimator": goal, "property_estimator": property}
    return _export(Path(out_dir), PPO, sources, property_labels, opset)


def _export(
    out_dir: Path,
    algorithm: str,
    sources: dict[str, Optional[str | Path]],
    property_labels: Sequence[str],
    opset: int,
) -> Manifest:
    """Build every given network, export and check it in a temporary folder, then move the files into
    ``out_dir`` (stale network files of any role removed) and write the manifest last."""
    import handover

    built = [_build(role, Path(src), property_labels) for role, src in sources.items() if src is not None]

    out_dir.mkdir(parents=True, exist_ok=True)
    checked: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        for net in built:
            path = Path(tmp) / net.spec.file
            _export_onnx(net, path, opset)
            checked[net.spec.role] = check_onnx_against_torch(net.module, net.spec, path)
        # Only now touch the bundle: the old manifest goes first, so no manifest ever names a mix.
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for stale in set(ROLE_FILES.values()) - {net.spec.file for net in built}:
            (out_dir / stale).unlink(missing_ok=True)
        for net in built:
            os.replace(Path(tmp) / net.spec.file, out_dir / net.spec.file)

    provenance = {
        "sources": {net.spec.role: {"path": str(net.source.resolve()), "sha256": _sha256(net.source)} for net in built},
        "files": {net.spec.file: _sha256(out_dir / net.spec.file) for net in built},
        "check": {"tolerance": TOLERANCE, "max_abs_diff": checked},
        "tools": _tool_versions(),
        "opset": opset,
        "handover_version": handover.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = Manifest(CONTRACT_VERSION, {net.spec.role: net.spec for net in built}, provenance, algorithm=algorithm)
    write_manifest(out_dir, manifest)
    load_manifest(out_dir)  # the bundle must load as written
    return manifest


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

_INSTALL_HINT = "pip install 'handover[export]'  (CPU-only torch: pip install torch==2.13.0)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export training checkpoints (.pt) to an ONNX policy bundle",
        description="Rebuild the Dynamic Handover networks from their training state dicts, export them to "
        "ONNX, check onnxruntime against torch and write a policy bundle (ONNX files + manifest.json). "
        "Give the two MAPPO actors (--thrower and --catcher) or one PPO policy (--ppo).",
    )
    p.add_argument("--thrower", metavar="PT", help="MAPPO thrower (agent 0) actor, e.g. actor_agent0.pt")
    p.add_argument("--catcher", metavar="PT", help="MAPPO catcher (agent 1) actor, e.g. actor_agent1.pt")
    p.add_argument(
        "--ppo",
        metavar="PT",
        help="PPO policy over both hands (900 inputs, 44 actions), e.g. model_5000.pt; instead of --thrower/--catcher",
    )
    p.add_argument("--goal", required=True, metavar="PT", help="goal (trajectory) estimator, e.g. model.pt")
    p.add_argument("--property", metavar="PT", help="optional property estimator (Generalizable Dynamic Handover)")
    p.add_argument(
        "--property-labels",
        nargs="+",
        default=list(DEFAULT_PROPERTY_LABELS),
        metavar="LABEL",
        help="meaning of each property-estimator output (default: %(default)s)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="bundle folder to write (created if needed)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    p.set_defaults(func=run)


def _shape_text(t: TensorSpec) -> str:
    return f"{t.name} ({', '.join(str(d) for d in t.shape)})"


def describe(manifest: Manifest, out_dir: Path) -> list[str]:
    """One line per written file: network file, main input -> main output, architecture, check result."""
    lines = []
    diffs = manifest.provenance.get("check", {}).get("max_abs_diff", {})
    for role, net in manifest.networks.items():
        arch = " ".join(f"{k}={v}" for k, v in net.info.items() if k in ("layer_N", "hidden", "recurrent_N", "hidden_sizes"))
        inputs = ", ".join(_shape_text(t) for t in net.inputs)
        outputs = ", ".join(_shape_text(t) for t in net.outputs)
        lines.append(
            f"  {out_dir / net.file}: {inputs} -> {outputs}  [{arch}]  max|onnx-torch| {diffs.get(role, float('nan')):.2g}"
        )
    lines.append(f"  {out_dir / MANIFEST_NAME}: contract {manifest.contract_version}, algorithm {manifest.algorithm}")
    return lines


def _algorithm(args: argparse.Namespace) -> str:
    """MAPPO for ``--thrower`` and ``--catcher``, PPO for ``--ppo``; any other mix is an :class:`InputError`."""
    if args.ppo is not None:
        if args.thrower is not None or args.catcher is not None:
            raise InputError("--ppo exports one policy for both hands: give it without --thrower/--catcher")
        return PPO
    if args.thrower is None or args.catcher is None:
        missing = " and ".join(o for o, v in (("--thrower", args.thrower), ("--catcher", args.catcher)) if v is None)
        raise InputError(f"{missing} missing: give both MAPPO actors (--thrower and --catcher) or one PPO policy (--ppo)")
    return MAPPO


def run(args: argparse.Namespace) -> int:
    algorithm = _algorithm(args)
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        print(f"handover export: needs torch and onnx, {exc.name or 'one'} is not installed: {_INSTALL_HINT}", file=sys.stderr)
        return 2
    inputs = [p for p in (args.thrower, args.catcher, args.ppo, args.goal, args.property) if p is not None]
    for p in inputs:
        input_file(p, "checkpoint")
    out_dir = output_folder(args.out, "--out", inputs)
    common = dict(goal=args.goal, property=args.property, property_labels=tuple(args.property_labels), opset=args.opset)
    with atomic_folder(out_dir) as tmp:  # the old bundle stays until the new one is complete
        if algorithm == PPO:
            manifest = export_ppo_bundle(tmp, ppo=args.ppo, **common)
        else:
            manifest = export_bundle(tmp, thrower=args.thrower, catcher=args.catcher, **common)
    print(f"handover export: wrote {len(manifest.networks)} networks ({algorithm}) to {out_dir}")
    print("\n".join(describe(manifest, out_dir)))
    return 0
