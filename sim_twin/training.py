"""Supervised training of the policy's three networks in torch (CPU): behaviour cloning of the two
MAPPO actors, regression of the goal estimator and of the property estimator.

Every network keeps exactly the module tree of :mod:`handover.runtime.networks`, so its state dict
(``torch.save(net.state_dict(), path)``) exports with ``handover export`` /
:func:`~handover.runtime.export.export_bundle` unchanged.

- Actors (:func:`fit_actor`): MSE between the Gaussian head's mean and the expert's action (clipped
  to [-1, 1]). No input normalization: the actor's ``base.feature_norm`` (LayerNorm over the 450
  inputs) already normalizes, and anything placed before it could not be folded into the weights.
- Estimators (:func:`fit_estimator`, used by :func:`fit_goal_estimator` and
  :func:`fit_property_estimator`): trained on per-feature standardized inputs and outputs; the
  standardization is then folded into ``linear1`` and ``output_layer`` (:func:`fold_normalization`),
  so the saved network takes the raw inputs and gives raw outputs, as the ONNX bundle must.

Losses are reported in the units of the targets (action units, m^2, factor^2). Training is
deterministic for a given seed (``torch.manual_seed``; minibatch order from a seeded generator)
on a given machine; it uses 2 threads (:data:`TORCH_THREADS`).
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from handover.runtime.errors import InputError

TORCH_THREADS = 2  # the training machine's cores

# Per-feature standard deviations below this are raised to it before standardizing an estimator's
# inputs (units of the feature: m or rad). Near-constant features (locked joints) carry no
# information; dividing by their tiny spread would blow up the folded first-layer weights.
STD_FLOOR = 0.05
# Input features whose standard deviation in the training data is below this (m or rad) are constant
# for the estimator (locked joints): their first-layer weights are 0, so they are ignored.
CONSTANT_BELOW = 1e-3


@dataclass(frozen=True)
class FitConfig:
    """Optimizer settings of one fit. Adam, minibatches, cosine learning-rate decay."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3  # initial learning rate
    lr_final: float = 0.05  # final learning rate as a fraction of ``lr`` (cosine decay per epoch)
    weight_decay: float = 0.0
    val_fraction: float = 0.1  # share of the groups (episodes) held out for validation
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"FitConfig: epochs ({self.epochs}) and batch_size ({self.batch_size}) must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"FitConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.lr > 0:
            raise ValueError(f"FitConfig.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ActorArch:
    """Size of the MAPPO actor (the original uses hidden 512, layer_N 2; smaller keeps the bundle small)."""

    hidden: int = 256
    layer_N: int = 1


@dataclass(frozen=True)
class FitResult:
    """What one fit did, for the bundle manifest. Losses are MSE in the units of the targets."""

    network: str
    epoch_losses: tuple[float, ...]  # mean training loss of each epoch (over its minibatches)
    train_loss: float  # final, whole training set, eval mode
    val_loss: Optional[float]  # final, held-out groups; None without a validation split
    train_samples: int
    val_samples: int
    seconds: float
    metrics: dict = field(default_factory=dict)  # extra final numbers, e.g. RMSE in m

    def to_dict(self) -> dict:
        d = asdict(self)
        d["epoch_losses"] = [float(x) for x in self.epoch_losses]
        return d


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _torch():
    import torch

    torch.set_num_threads(TORCH_THREADS)
    return torch


def _check_xy(name: str, x: np.ndarray, y: np.ndarray, in_dim: int, out_dim: int) -> None:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != in_dim:
        raise InputError(f"{name}: inputs have shape {x.shape}, expected (N, {in_dim})")
    if y.ndim != 2 or y.shape[1] != out_dim or y.shape[0] != x.shape[0]:
        raise InputError(f"{name}: targets have shape {y.shape}, expected ({x.shape[0]}, {out_dim})")
    if x.shape[0] == 0:
        raise InputError(f"{name}: no samples")
    for what, a in (("inputs", x), ("targets", y)):
        if not np.isfinite(a).all():
            raise InputError(f"{name}: {what} have a non-finite value at index {np.argwhere(~np.isfinite(a))[0].tolist()}")


def split_groups(groups: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices (train, validation), holding out whole groups (e.g. episodes: samples of one
    episode are strongly correlated). At least one group stays in training; with a single group or
    ``val_fraction`` 0 the validation set is empty."""
    groups = np.asarray(groups)
    ids = np.unique(groups)
    n_val = int(round(val_fraction * len(ids)))
    n_val = min(n_val, len(ids) - 1)
    rng = np.random.default_rng(seed)
    val_ids = rng.choice(ids, size=n_val, replace=False) if n_val > 0 else np.array([], groups.dtype)
    is_val = np.isin(groups, val_ids)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _train(model, x, y, train_idx, val_idx, cfg: FitConfig, out_scale, desc: str, progress: bool):
    """Minibatch Adam on ``mean((model(x) - y)^2)``; returns (epoch losses, final train, final val).
    Reported losses are ``mean(((model(x) - y) * out_scale)^2)`` (target units)."""
    torch = _torch()
    from tqdm import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr * cfg.lr_final)
    gen = torch.Generator().manual_seed(cfg.seed)
    tr = torch.as_tensor(train_idx, dtype=torch.long)
    scale2 = out_scale**2
    losses = []
    bar = tqdm(range(cfg.epochs), desc=desc, file=sys.stderr, disable=not progress, unit="epoch")
    for _ in bar:
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen)]
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            b = order[start:start + cfg.batch_size]
            err = model(x[b]) - y[b]
            loss = (err**2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                total += float((err.detach() ** 2 * scale2).mean()) * len(b)
                count += len(b)
        sched.step()
        losses.append(total / count)
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
    bar.close()
    model.eval()
    train_loss = _eval_loss(model, x, y, train_idx, scale2)
    val_loss = _eval_loss(model, x, y, val_idx, scale2) if len(val_idx) else None
    return tuple(losses), train_loss, val_loss


def _eval_loss(model, x, y, idx, scale2, chunk: int = 8192) -> float:
    torch = _torch()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(idx), chunk):
            b = torch.as_tensor(idx[start:start + chunk], dtype=torch.long)
            total += float((((model(x[b]) - y[b]) ** 2) * scale2).sum())
    return total / (len(idx) * y.shape[1])


# --------------------------------------------------------------------------------------------
# actors
# --------------------------------------------------------------------------------------------


def fit_actor(
    inputs: np.ndarray,
    actions: np.ndarray,
    cfg: FitConfig = FitConfig(),
    arch: ActorArch = ActorArch(),
    groups: Optional[np.ndarray] = None,
    init=None,
    name: str = "actor",
    progress: bool = False,
):
    """Behaviour cloning of one MAPPO actor.

    Args:
        inputs: (N, 450) the agent's inputs, built by the contract exactly as at deployment.
        actions: (N, 22) the expert's actions for that agent (clipped to [-1, 1] here).
        groups: (N,) episode ids for the validation split (default: every sample its own group).
        init: an :class:`~handover.runtime.networks.Actor` to start from (warm start, e.g. in DAgger
            rounds); it is copied, not changed, and its architecture wins over ``arch``.
            Default: a fresh one (seeded by ``cfg.seed``).

    Returns ``(actor, FitResult)``; the actor is in eval mode, its forward gives the action mean.
    The log-std is left at its initial value (0): it only matters for later RL fine-tuning.
    """
    torch = _torch()
    from handover.runtime.networks import make_actor

    _check_xy(name, inputs, actions, 450, 22)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    actor = copy.deepcopy(init) if init is not None else make_actor(450, 22, hidden=arch.hidden, layer_N=arch.layer_N)
    if actor.recurrent:
        raise InputError(f"{name}: behaviour cloning supports feed-forward actors only (recurrent_N = {actor.recurrent_N})")
    x = torch.as_tensor(np.asarray(inputs, np.float32))
    y = torch.as_tensor(np.clip(np.asarray(actions, np.float32), -1.0, 1.0))
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    tr, va = split_groups(groups, cfg.val_fraction, cfg.seed)
    losses, train_loss, val_loss = _train(actor, x, y, tr, va, cfg, torch.ones(22), name, progress)
    return actor, FitResult(name, losses, train_loss, val_loss, len(tr), len(va), time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardization:
    """Per-feature affine map to standardized units: ``x_n = (x - mean) * scale`` (float64 arrays).

    ``scale`` is ``1 / max(std, floor)``, and 0 for a feature whose spread is below ``constant_below``:
    a constant feature (a locked joint) carries no information, and a zero scale makes the folded
    network ignore it, whatever value it takes later.
    """

    mean: np.ndarray
    scale: np.ndarray

    @staticmethod
    def of(a: np.ndarray, floor: float = 0.0, constant_below: float = 0.0) -> "Standardization":
        a = np.asarray(a, np.float64)
        std = a.std(axis=0)
        scale = 1.0 / np.maximum(std, max(floor, 1e-12))
        scale[std < constant_below] = 0.0
        return Standardization(a.mean(axis=0), scale)

    def apply(self, a: np.ndarray) -> np.ndarray:
        """(N, F) raw -> standardized, float32."""
        return ((np.asarray(a, np.float64) - self.mean) * self.scale).astype(np.float32)


def fold_normalization(net, inputs: Standardization, outputs: Standardization) -> None:
    """Make ``net`` (an :class:`~handover.runtime.networks.EstimatorMLP` trained on standardized data,
    ``y_n = net((x - mi) * si)``, ``y = y_n / so + mo``) take raw ``x`` and give raw ``y``, in place:

    ``linear1``: ``W' = W * si`` (per input column), ``b' = b - W' mi``;
    ``output_layer``: ``W' = W / so`` (per output row), ``b' = b / so + mo``. Computed in float64.
    """
    torch = _torch()
    with torch.no_grad():
        lin, out = net.linear1, net.output_layer
        mi, si, mo, so = (torch.as_tensor(v, dtype=torch.float64) for v in (inputs.mean, inputs.scale, outputs.mean, outputs.scale))
        w = lin.weight.double() * si[None, :]
        lin.bias.copy_((lin.bias.double() - w @ mi).to(lin.bias.dtype))
        lin.weight.copy_(w.to(lin.weight.dtype))
        out.bias.copy_((out.bias.double() / so + mo).to(out.bias.dtype))
        out.weight.copy_((out.weight.double() / so[:, None]).to(out.weight.dtype))


def unfold_normalization(net, inputs: Standardization, outputs: Standardization) -> None:
    """The inverse of :func:`fold_normalization` (for a warm start): a raw-in, raw-out ``net`` becomes
    one that takes and gives standardized numbers. Input columns with scale 0 become 0 (ignored)."""
    torch = _torch()
    with torch.no_grad():
        lin, out = net.linear1, net.output_layer
        mi, si, mo, so = (torch.as_tensor(v, dtype=torch.float64) for v in (inputs.mean, inputs.scale, outputs.mean, outputs.scale))
        w_raw = lin.weight.double()
        b = lin.bias.double() + w_raw @ mi
        safe = torch.where(si > 0, si, torch.ones_like(si))
        w = torch.where(si[None, :] > 0, w_raw / safe[None, :], torch.zeros_like(w_raw))
        lin.weight.copy_(w.to(lin.weight.dtype))
        lin.bias.copy_(b.to(lin.bias.dtype))
        out.bias.copy_(((out.bias.double() - mo) * so).to(out.bias.dtype))
        out.weight.copy_((out.weight.double() * so[:, None]).to(out.weight.dtype))


def fit_estimator(
    net,
    inputs: np.ndarray,
    targets: np.ndarray,
    cfg: FitConfig,
    groups: Optional[np.ndarray] = None,
    name: str = "estimator",
    progress: bool = False,
    metrics: Optional[Callable[[np.ndarray, np.ndarray], dict]] = None,
    warm_start: bool = False,
):
    """MSE regression of an estimator MLP (``linear1..3``, ``output_layer``) on standardized inputs and
    targets; the standardization is folded into the weights at the end (:func:`fold_normalization`),
    so the returned ``net`` (the same object, changed in place) maps raw inputs to raw outputs.

    Args:
        groups: (N,) ids for the validation split (e.g. episodes); default: every sample its own.
        metrics: ``metrics(estimate, target) -> {name: value}`` on raw (N, out) arrays; evaluated on
            the training and validation sets, keys prefixed ``train_`` / ``val_`` in ``FitResult.metrics``.
        warm_start: ``net`` already maps raw inputs to raw outputs (a previous fit); the fold is undone
            with this fit's statistics first, so training starts from the same function.

    Inputs are standardized per feature with the std raised to :data:`STD_FLOOR`, features with a
    spread below :data:`CONSTANT_BELOW` are ignored (scale 0); targets are standardized per output.
    Returns ``(net, FitResult)``.
    """
    torch = _torch()
    in_dim, out_dim = net.linear1.in_features, net.output_layer.out_features
    _check_xy(name, inputs, targets, in_dim, out_dim)
    t0 = time.perf_counter()
    x_raw = np.asarray(inputs, np.float32)
    y_raw = np.asarray(targets, np.float32)
    groups = np.arange(len(x_raw)) if groups is None else np.asarray(groups)
    tr, va = split_groups(groups, cfg.val_fraction, cfg.seed)
    sx = Standardization.of(x_raw[tr], floor=STD_FLOOR, constant_below=CONSTANT_BELOW)
    sy = Standardization.of(y_raw[tr], floor=1e-6)
    if warm_start:
        unfold_normalization(net, sx, sy)
    x = torch.as_tensor(sx.apply(x_raw))
    y = torch.as_tensor(sy.apply(y_raw))
    out_std = torch.as_tensor(1.0 / sy.scale, dtype=torch.float32)
    losses, train_loss, val_loss = _train(net, x, y, tr, va, cfg, out_std, name, progress)
    fold_normalization(net, sx, sy)
    net.eval()
    found = {}
    if metrics is not None:
        for split, idx in (("train", tr), ("val", va)):
            if len(idx):
                found.update({f"{split}_{k}": float(v) for k, v in metrics(predict(net, x_raw[idx]), y_raw[idx]).items()})
    return net, FitResult(name, losses, train_loss, val_loss, len(tr), len(va), time.perf_counter() - t0, found)


def _rmse_m(estimate: np.ndarray, target: np.ndarray) -> dict:
    """Root of the mean squared error per axis (m) and the mean Euclidean error (m)."""
    d = estimate - target
    return {"rmse_m": np.sqrt(np.mean(d**2)), "mean_dist_m": np.mean(np.linalg.norm(d, axis=1))}


def _mre(estimate: np.ndarray, target: np.ndarray) -> dict:
    """Mean relative error ``|estimate - true| / |true|`` (the property-estimation papers' MRE)."""
    return {"mre": np.mean(np.abs(estimate - target) / np.abs(target))}


def fit_goal_estimator(
    histories: np.ndarray,
    goals_rel: np.ndarray,
    cfg: FitConfig = FitConfig(),
    groups: Optional[np.ndarray] = None,
    init=None,
    progress: bool = False,
):
    """The goal (trajectory) estimator: ``TrajEstimator`` 60 -> 3.

    Args:
        histories: (N, 60) the 20-entry object history (m, relative to the thrower base, oldest first).
        goals_rel: (N, 3) the true goal (arrival point) relative to the thrower base, m.
        init: a trained ``TrajEstimator`` to start from (warm start); it is copied, not changed.

    ``FitResult.metrics``: ``{train,val}_rmse_m`` and ``{train,val}_mean_dist_m``.
    """
    torch = _torch()
    from handover.runtime.networks import TrajEstimator

    torch.manual_seed(cfg.seed)
    net = copy.deepcopy(init) if init is not None else TrajEstimator()
    return fit_estimator(net, histories, goals_rel, cfg, groups, "goal estimator", progress, _rmse_m, init is not None)


def fit_property_estimator(
    windows: np.ndarray,
    factors: np.ndarray,
    cfg: FitConfig = FitConfig(),
    groups: Optional[np.ndarray] = None,
    progress: bool = False,
):
    """The property estimator: ``PropertyEstimator`` 940 -> P.

    Args:
        windows: (N, 940) the last 20 steps of ``[object_rel (3), thrower_q (22), catcher_q (22)]``,
            oldest first, flattened (m, rad), as :class:`~handover.runtime.policy_step.PropertyWindow` builds them.
        factors: (N, P) the property factors to estimate, e.g. (N, 1) mass factor.

    ``FitResult.metrics``: ``{train,val}_mre`` (mean relative error).
    """
    torch = _torch()
    from handover.runtime.networks import PropertyEstimator

    factors = np.asarray(factors, np.float32).reshape(len(factors), -1)
    torch.manual_seed(cfg.seed)
    net = PropertyEstimator(input_dim=np.asarray(windows).shape[-1], output_dim=factors.shape[1])
    return fit_estimator(net, windows, factors, cfg, groups, "property estimator", progress, _mre)


# --------------------------------------------------------------------------------------------
# running trained networks on numpy arrays
# --------------------------------------------------------------------------------------------


def predict(net, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``net`` on a batch (N, in) of float32 numbers -> (N, out) float32 (no gradients)."""
    torch = _torch()
    x = np.asarray(x, np.float32)
    x = x.reshape(-1, x.shape[-1])
    out = []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            out.append(net(torch.from_numpy(np.ascontiguousarray(x[start:start + chunk]))).numpy())
    if not out:
        raise InputError("predict: no samples (an empty batch)")
    return np.concatenate(out)


def goal_fn(net) -> Callable[[np.ndarray], np.ndarray]:
    """The goal estimator as a function (N, 60) -> (N, 3) (m, relative to the thrower base)."""
    net.eval()
    return lambda histories: predict(net, histories)


def actor_fn(actor) -> Callable[[np.ndarray], np.ndarray]:
    """A feed-forward actor as a function (N, 450) -> (N, 22) action means (unclipped)."""
    actor.eval()
    return lambda inputs: predict(actor, inputs)


def save_state_dict(net, path) -> None:
    """``torch.save(net.state_dict(), path)``: the checkpoint format ``handover export`` loads."""
    torch = _torch()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


__all__ = [
    "ActorArch",
    "FitConfig",
    "FitResult",
    "Standardization",
    "actor_fn",
    "fit_actor",
    "fit_estimator",
    "fit_goal_estimator",
    "fit_property_estimator",
    "fold_normalization",
    "unfold_normalization",
    "goal_fn",
    "predict",
    "save_state_dict",
    "split_groups",
]
