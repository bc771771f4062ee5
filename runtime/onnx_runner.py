"""Run one ONNX network with onnxruntime, tuned for single-sample latency.

- Provider: CUDA when onnxruntime offers it, else CPU.
- Session options: one intra-op and one inter-op thread, sequential execution, all graph
  optimizations; no thread pool hand-offs for one 450-number sample.
- Inputs are validated (shape, dtype, finite values) with errors naming the network and input.
- A recurrent network's hidden state is carried between calls and zeroed by :meth:`reset`.
- :meth:`warmup` runs the network a few times before going live (first calls are slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from handover.runtime.bundle import BundleError, NetworkSpec, TensorSpec
from handover.runtime.errors import InputError

_NP_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64}


def choose_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, the CPU always as fallback."""
    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def latency_session_options(threads: int = 1) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_mem_pattern = True
    opts.log_severity_level = 3
    return opts


def check_against_manifest(session: ort.InferenceSession, spec: NetworkSpec, path: Path, prefix: str = "") -> None:
    """The model's input/output names and per-sample shapes must be the manifest's."""
    have_in = {i.name: i.shape for i in session.get_inputs()}
    have_out = {o.name: o.shape for o in session.get_outputs()}
    for t, have, kind in [(t, have_in, "input") for t in spec.inputs] + [(t, have_out, "output") for t in spec.outputs]:
        name = prefix + t.name
        if name not in have:
            raise BundleError(f"{path}: manifest names {kind} {t.name!r} of {spec.role}, the model has {sorted(have)}")
        fixed = list(have[name][1:])
        if all(isinstance(d, int) for d in fixed) and tuple(fixed) != t.sample_shape:
            raise BundleError(
                f"{path}: {kind} {t.name!r} has per-sample shape {tuple(fixed)} in the model, "
                f"{t.sample_shape} in the manifest"
            )


def validate_input(role: str, spec: TensorSpec, x: np.ndarray) -> np.ndarray:
    """``x`` as a contiguous (batch, ...) array of the input's dtype, or :class:`InputError` naming
    the network and the input (wrong shape, non-numeric dtype, NaN or inf)."""
    x = np.asarray(x)
    want = spec.sample_shape
    if x.shape == want:
        x = x.reshape(1, *want)
    if x.ndim != len(want) + 1 or x.shape[1:] != want:
        raise InputError(f"{role}: input {spec.name!r} must have shape {want} or (batch, *{want}), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"{role}: input {spec.name!r} has dtype {x.dtype}, expected {spec.dtype}")
    dtype = _NP_DTYPES[spec.dtype]
    if x.dtype != dtype:
        x = x.astype(dtype)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0].tolist()
        raise InputError(f"{role}: input {spec.name!r} is not finite at index {bad}")
    return np.ascontiguousarray(x)


class NetworkRunner:
    """One network of a bundle, called one sample (or one batch) at a time."""

    def __init__(self, path: str | Path, spec: NetworkSpec, providers: list[str] | None = None):
        self.path = Path(path)
        self.spec = spec
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=latency_session_options(), providers=providers or choose_providers()
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{self.path}: onnxruntime cannot load {spec.role}: {exc}") from None
        check_against_manifest(self.session, spec, self.path)
        self._in = spec.main_input
        self._out = spec.main_output
        self._dtype = _NP_DTYPES[self._in.dtype]
        self._state: np.ndarray | None = None
        self._output_names = [o.name for o in spec.outputs]
        self._main_out_index = self._output_names.index(self._out.name)
        if spec.state is not None:
            self._state_out_index = self._output_names.index(spec.state.output)
        self.reset()

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def reset(self) -> None:
        """Zero the hidden state of a recurrent network (no-op otherwise)."""
        if self.spec.state is not None:
            self._state = np.zeros((1, *self.spec.state.shape[1:]), dtype=np.float32)

    def validate(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` as a (batch, ...) array of the network's dtype, or raise :class:`InputError`."""
        return validate_input(self.spec.role, self._in, x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one sample (shape = the input's per-sample shape) or a batch; return the main output
        with the same leading shape. A recurrent network keeps its state for one sample only."""
        single = np.asarray(x).shape == self._in.sample_shape
        xb = self.validate(x)
        feeds = {self._in.name: xb}
        if self.spec.state is not None:
            if xb.shape[0] != 1:
                raise InputError(f"{self.spec.role}: a recurrent network runs one sample at a time, got batch {xb.shape[0]}")
            feeds[self.spec.state.input] = self._state
        outs = self.session.run(self._output_names, feeds)
        if self.spec.state is not None:
            self._state = outs[self._state_out_index]
        y = outs[self._main_out_index]
        return y[0] if single else y

    def warmup(self, n: int = 50) -> None:
        """Run ``n`` calls on zeros so that allocations and kernel choices happen before going live;
        the hidden state is reset afterwards."""
        zeros = np.zeros(self._in.sample_shape, dtype=self._dtype)
        for _ in range(n):
            self.run(zeros)
        self.reset()


class FusedRunner:
    """Several independent networks of one bundle in a single onnxruntime session, so that a
    control step makes one call for all of them instead of one per network (on this project's
    2-core CI machine that cut the two actors' latency by about a quarter; see ``handover benchmark``).

    Each network's inputs and outputs keep their names behind a ``<role>/`` prefix. Networks run
    one sample at a time; recurrent state is carried per network and zeroed by :meth:`reset`.
    """

    def __init__(self, folder: str | Path, specs: list[NetworkSpec], providers: list[str] | None = None):
        import onnx
        from onnx import compose, helper, version_converter

        self.folder = Path(folder)
        self.specs = {s.role: s for s in specs}
        models = []
        for spec in specs:
            path = self.folder / spec.file
            try:
                model = onnx.load(str(path))
            except Exception as exc:  # onnx raises DecodeError and friends
                raise BundleError(f"{path}: cannot read {spec.role}: {exc}") from None
            if not model.graph.node or not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
                size = path.stat().st_size
                raise BundleError(f"{path}: {spec.role} is not an ONNX model ({size} bytes, no graph or no opset)")
            models.append(model)
        opset = max(_default_opset(m) for m in models)
        models = [m if _default_opset(m) == opset else version_converter.convert_version(m, opset) for m in models]
        models = [compose.add_prefix(m, prefix=f"{s.role}/") for m, s in zip(models, specs)]
        graph = helper.make_graph(
            [n for m in models for n in m.graph.node],
            "handover_fused",
            [i for m in models for i in m.graph.input],
            [o for m in models for o in m.graph.output],
            [t for m in models for t in m.graph.initializer],
        )
        fused = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        fused.ir_version = max(m.ir_version for m in models)
        try:
            self.session = ort.InferenceSession(
                fused.SerializeToString(), sess_options=latency_session_options(), providers=providers or choose_providers()
            )
        except Exception as exc:
            raise BundleError(f"{self.folder}: onnxruntime cannot run {sorted(self.specs)} fused: {exc}") from None
        for spec in specs:
            check_against_manifest(self.session, spec, self.folder / spec.file, prefix=f"{spec.role}/")
        self._outputs = [f"{s.role}/{o.name}" for s in specs for o in s.outputs]
        self._states: dict[str, np.ndarray] = {}
        self.reset()

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def reset(self) -> None:
        """Zero the hidden state of every recurrent network."""
        self._states = {
            role: np.zeros((1, *s.state.shape[1:]), dtype=np.float32) for role, s in self.specs.items() if s.state is not None
        }

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One sample per network (``{role: x}``, every role given); returns ``{role: y}``."""
        feeds = {}
        for role, spec in self.specs.items():
            if role not in inputs:
                raise InputError(f"fused networks: no input for {role}")
            x = validate_input(role, spec.main_input, inputs[role])
            if x.shape[0] != 1:
                raise InputError(f"{role}: one sample at a time, got batch {x.shape[0]}")
            feeds[f"{role}/{spec.main_input.name}"] = x
            if spec.state is not None:
                feeds[f"{role}/{spec.state.input}"] = self._states[role]
        values = dict(zip(self._outputs, self.session.run(self._outputs, feeds)))
        out = {}
        for role, spec in self.specs.items():
            out[role] = values[f"{role}/{spec.main_output.name}"][0]
            if spec.state is not None:
                self._states[role] = values[f"{role}/{spec.state.output}"]
        return out

    def warmup(self, n: int = 50) -> None:
        zeros = {role: np.zeros(s.main_input.sample_shape, np.float32) for role, s in self.specs.items()}
        for _ in range(n):
            self.run(zeros)
        self.reset()


def _default_opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
