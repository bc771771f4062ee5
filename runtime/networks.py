"""The torch networks of the Dynamic Handover code base, rebuilt to load its checkpoints unchanged.

Module trees and parameter names are exactly the original ones, so a training checkpoint (a plain
state dict) loads strictly. Verified against the code base's ``dexteroushandenvs/algorithms``
(``marl/actor_critic.py`` ``Actor``, ``utils/mlp.py``, ``utils/act.py``, ``utils/distributions.py``,
``sarl/ppo/module.py`` ``ActorCritic``, ``sarl/ppo/ppo.py`` ``save``) as published in forks of
the Dynamic Handover repository, and against ``shared/reference/dynamic-handover-contract.md``.

- MAPPO actor (one per agent, ``actor_agent0.pt`` / ``actor_agent1.pt``)::

      base.feature_norm                  LayerNorm(obs_dim)
      base.mlp.fc1.{0,2}                 Linear(obs_dim, hidden), ELU, LayerNorm(hidden)
      base.mlp.fc2.N.{0,2}               layer_N x (Linear(hidden, hidden), ELU, LayerNorm(hidden))
      rnn.rnn / rnn.norm                 optional GRU(hidden, hidden, recurrent_N), LayerNorm(hidden)
      act.action_out.fc_mean             Linear(hidden, act_dim)     -> the deployed action (mean)
      act.action_out.log_std             (act_dim,) std = 0.5 * sigmoid(log_std) (unused when deployed)

  The shipped config has layer_N 2, hidden 512, no GRU. Checkpoints of the upstream on-policy MAPPO
  store the exploration parameter as ``act.action_out.logstd._bias`` (act_dim, 1) or
  ``act.action_out.logstd`` (act_dim,); both are accepted and stored as ``log_std`` (the value is kept
  as is; it never reaches the deployed forward). Keys under ``base.mlp.fc_h.`` (an unused clone
  template of the upstream ``MLPLayer``) are ignored.

- PPO actor-critic (one policy over both hands, the code base's ``--algo=ppo``; its ``PPO.save`` writes
  ``ActorCritic.state_dict()`` to ``model_<iteration>.pt``)::

      actor.{0,2,4,6}                    Linear(900, 1024), ELU, Linear(1024, 1024), ELU,
                                         Linear(1024, 512), ELU, Linear(512, 44)  -> the action mean
      critic.{0,2,4,6}                   the same widths with 1 output (value; unused when deployed)
      log_std                            (44,) std = exp(log_std) (unused when deployed)

  ``actor.N`` with odd N are the parameterless ELUs. Widths are read from the checkpoint (config
  ``policy.pi_hid_sizes`` / ``vf_hid_sizes``, shipped ``[1024, 1024, 512]``); the activation is not in
  the checkpoint: ELU, the shipped ``policy.activation``, is assumed.

- Goal (trajectory) estimator ``TrajEstimator`` (``model.pt``) and the property estimator of
  Generalizable Dynamic Handover: ``linear1..3`` + ``output_layer`` with ELU in between.

The deployed forwards are deterministic and export to ONNX as they are:
``Actor(obs) -> mean`` (feed-forward) or ``Actor(obs, state) -> (mean, new_state)`` (recurrent),
``PPOActorCritic(obs) -> mean``, ``estimator(x) -> outputs``. Any checkpoint that does not match
raises :class:`~handover.runtime.errors.InputError` (one line) naming the file, the key, the expected
and the found shape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, NoReturn, Optional, Sequence, TypeVar

import torch
from torch import Tensor, nn

from handover.runtime.contract import DOFS, PROPERTY_HISTORY_LEN, PROPERTY_STEP_SIZE
from handover.runtime.errors import InputError

LOGSTD_KEY = "act.action_out.log_std"  # the original layout, shape (act_dim,)
# Upstream on-policy MAPPO layouts, accepted: key -> per-entry shape suffix after act_dim.
LOGSTD_ALIASES = {"act.action_out.logstd._bias": (1,), "act.action_out.logstd": ()}
IGNORED_PREFIXES = ("base.mlp.fc_h.",)  # registered but unused in the upstream on-policy MLPLayer
STD_Y_COEF = 0.5  # the original DiagGaussian: std = STD_Y_COEF * sigmoid(log_std / STD_X_COEF)
STD_X_COEF = 1.0

# Per-step sizes of the property-estimator window: object position (3) + 44 joint positions,
# optionally + 44 joint torques.
PROPERTY_STEP_SIZES = (PROPERTY_STEP_SIZE, PROPERTY_STEP_SIZE + DOFS)  # 47, 91
PROPERTY_INPUT_SIZES = tuple(PROPERTY_HISTORY_LEN * s for s in PROPERTY_STEP_SIZES)  # 940, 1820

StateDict = dict[str, Tensor]
_MAX_LISTED_PROBLEMS = 8


# --------------------------------------------------------------------------------------------
# MAPPO actor (module tree of the original R_Actor)
# --------------------------------------------------------------------------------------------


def _dense(n_in: int, n_out: int) -> nn.Sequential:
    """``Linear(n_in, n_out), ELU, LayerNorm(n_out)``: one block of the original MLPLayer."""
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ELU(), nn.LayerNorm(n_out))


class MLPLayer(nn.Module):
    """``fc1`` then ``layer_N`` blocks ``fc2[i]``; (batch, obs_dim) -> (batch, hidden)."""

    def __init__(self, obs_dim: int, hidden: int, layer_N: int):
        super().__init__()
        self.fc1 = _dense(obs_dim, hidden)
        self.fc2 = nn.ModuleList([_dense(hidden, hidden) for _ in range(layer_N)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        for block in self.fc2:
            x = block(x)
        return x


class MLPBase(nn.Module):
    """``feature_norm`` (LayerNorm over the raw observation) then the MLP; (batch, obs_dim) -> (batch, hidden)."""

    def __init__(self, obs_dim: int, hidden: int, layer_N: int):
        super().__init__()
        self.feature_norm = nn.LayerNorm(obs_dim)
        self.mlp = MLPLayer(obs_dim, hidden, layer_N)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.feature_norm(x))


class RNNLayer(nn.Module):
    """One GRU time step then LayerNorm, as MAPPO runs it during rollouts (masks = 1).

    ``x`` (batch, hidden), ``hxs`` (batch, recurrent_N, hidden) -> (batch, hidden), (batch, recurrent_N, hidden).
    Episode resets zero ``hxs`` outside the network.
    """

    def __init__(self, hidden: int, recurrent_N: int):
        super().__init__()
        self.rnn = nn.GRU(hidden, hidden, num_layers=recurrent_N)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor, hxs: Tensor) -> tuple[Tensor, Tensor]:
        out, h = self.rnn(x.unsqueeze(0), hxs.transpose(0, 1).contiguous())
        return self.norm(out.squeeze(0)), h.transpose(0, 1)


class DiagGaussian(nn.Module):
    """Diagonal-Gaussian action head of the original; deployed deterministically:
    (batch, hidden) -> mean (batch, act_dim).

    ``log_std`` (act_dim,) is not a log standard deviation: the original computes
    ``std = 0.5 * sigmoid(log_std)`` (clamped to >= 1e-3). It only matters for exploration in training.
    """

    def __init__(self, hidden: int, act_dim: int):
        super().__init__()
        self.fc_mean = nn.Linear(hidden, act_dim)
        # Initialized to 0 here (the original starts at 1.0); training-time only either way.
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_mean(x)

    def std(self) -> Tensor:
        """The training-time action standard deviation (act_dim,), as the original computes it."""
        return (torch.sigmoid(self.log_std.detach() / STD_X_COEF) * STD_Y_COEF).clamp(min=1e-3)


class ACTLayer(nn.Module):
    """Action layer of the original (continuous action space: a single DiagGaussian)."""

    def __init__(self, hidden: int, act_dim: int):
        super().__init__()
        self.action_out = DiagGaussian(hidden, act_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.action_out(x)


class Actor(nn.Module):
    """The MAPPO actor with the original module tree; its forward returns the action mean (unclipped).

    Feed-forward: ``forward(obs)`` with obs (batch, obs_dim) -> mean (batch, act_dim).
    Recurrent: ``forward(obs, state)`` with state (batch, recurrent_N, hidden)
    -> (mean (batch, act_dim), new state (batch, recurrent_N, hidden)).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layer_N: int, recurrent_N: int = 0):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, hidden
        self.layer_N, self.recurrent_N = layer_N, recurrent_N
        self.base = MLPBase(obs_dim, hidden, layer_N)
        self.rnn: Optional[RNNLayer] = RNNLayer(hidden, recurrent_N) if recurrent_N > 0 else None
        self.act = ACTLayer(hidden, act_dim)

    @property
    def recurrent(self) -> bool:
        return self.rnn is not None

    @property
    def state_shape(self) -> tuple[int, int]:
        """Per-sample hidden-state shape (recurrent_N, hidden); (0, hidden) for a feed-forward actor."""
        return (self.recurrent_N, self.hidden)

    def forward(self, obs: Tensor, state: Optional[Tensor] = None) -> Tensor | tuple[Tensor, Tensor]:
        x = self.base(obs)
        if self.rnn is None:
            return self.act(x)
        if state is None:
            raise ValueError("a recurrent actor needs its hidden state (batch, recurrent_N, hidden)")
        x, state = self.rnn(x, state)
        return self.act(x), state


def make_actor(obs_dim: int = 450, act_dim: int = 22, hidden: int = 512, layer_N: int = 2, recurrent_N: int = 0) -> Actor:
    """A freshly initialized actor with the original module tree (for tests and tools)."""
    return Actor(obs_dim, act_dim, hidden, layer_N, recurrent_N)


# --------------------------------------------------------------------------------------------
# PPO actor-critic (module tree of the original sarl ActorCritic)
# --------------------------------------------------------------------------------------------


def _elu_mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    """``Linear, ELU`` per hidden width, then ``Linear(hidden[-1], n_out)``; Linear layers sit at the even
    indices 0, 2, 4, ... of the Sequential (the original's ``actor_layers`` list)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ELU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class PPOActorCritic(nn.Module):
    """The PPO actor-critic with the original module tree; its forward is the original
    ``act_inference``: obs (batch, obs_dim) -> action mean (batch, act_dim) (unclipped).

    ``critic`` (value head, input ``critic_obs_dim``: obs_dim, or the state size of an asymmetric
    critic) and ``log_std`` (std = exp(log_std)) are loaded for strictness but never run when deployed.
    """

    def __init__(
        self,
        obs_dim: int = 900,
        act_dim: int = 44,
        hidden: Sequence[int] = (1024, 1024, 512),
        critic_hidden: Optional[Sequence[int]] = None,
        critic_obs_dim: Optional[int] = None,
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        self.critic_hidden = tuple(hidden if critic_hidden is None else critic_hidden)
        self.critic_obs_dim = obs_dim if critic_obs_dim is None else critic_obs_dim
        self.actor = _elu_mlp(obs_dim, self.hidden, act_dim)
        self.critic = _elu_mlp(self.critic_obs_dim, self.critic_hidden, 1)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: Tensor) -> Tensor:
        return self.actor(obs)


def make_ppo(obs_dim: int = 900, act_dim: int = 44, hidden: Sequence[int] = (1024, 1024, 512)) -> PPOActorCritic:
    """A freshly initialized PPO actor-critic with the original module tree (for tests and tools)."""
    return PPOActorCritic(obs_dim, act_dim, hidden)


# --------------------------------------------------------------------------------------------
# Estimators (linear1..3 + output_layer, ELU)
# --------------------------------------------------------------------------------------------


class EstimatorMLP(nn.Module):
    """``linear1 ELU linear2 ELU linear3 ELU output_layer``: (batch, input_dim) -> (batch, output_dim)."""

    def __init__(self, input_dim: int, output_dim: int, hidden: tuple[int, int, int] = (512, 256, 128)):
        super().__init__()
        h1, h2, h3 = hidden
        self.linear1 = nn.Linear(input_dim, h1)
        self.linear2 = nn.Linear(h1, h2)
        self.linear3 = nn.Linear(h2, h3)
        self.output_layer = nn.Linear(h3, output_dim)
        self.activate_func = nn.ELU()

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer (batch, hidden[2]) (the original forward's second output)."""
        x = self.activate_func(self.linear1(x))
        x = self.activate_func(self.linear2(x))
        return self.activate_func(self.linear3(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.output_layer(self.features(x))


class TrajEstimator(EstimatorMLP):
    """Goal estimator: the 20-entry object history (batch, 60) (m, relative to the thrower base)
    -> predicted goal (batch, 3) (m, relative to the thrower base)."""

    def __init__(self, input_dim: int = 60, output_dim: int = 3, hidden: tuple[int, int, int] = (512, 256, 128)):
        super().__init__(input_dim, output_dim, hidden)


class PropertyEstimator(EstimatorMLP):
    """Property estimator: the last 20 steps of (object position 3, joint positions 44[, joint torques 44]),
    oldest first, flattened to (batch, 940 or 1820) -> property factors (batch, P) (e.g. mass factor)."""

    def __init__(self, input_dim: int = 940, output_dim: int = 1, hidden: tuple[int, int, int] = (512, 256, 128)):
        super().__init__(input_dim, output_dim, hidden)


# --------------------------------------------------------------------------------------------
# Loading checkpoints
# --------------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path) -> StateDict:
    """Read a ``.pt`` file as a state dict (plain, or under a ``state_dict``/``model`` entry).

    Uses ``torch.load(..., weights_only=True)``: pickled modules or code are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read as a PyTorch state dict: {first_line}") from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise InputError(f"{path}: expected a state dict (a mapping of parameter names to tensors), found {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise InputError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor")
    return {str(k): v for k, v in obj.items()}


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def _describe(shape: Optional[tuple[int, ...]]) -> str:
    return "none" if shape is None else f"shape {shape}"


def _problem(key: str, expected: Optional[tuple[int, ...]], found: Optional[tuple[int, ...]]) -> str:
    return f"{key!r}: expected {_describe(expected)}, found {_describe(found)}"


def _raise(source: str, what: str, problems: list[str]) -> NoReturn:
    listed = problems[:_MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    tail = f"; and {more} more" if more else ""
    raise InputError(f"{source}: does not match a {what}: " + "; ".join(listed) + tail)


def _matrix_shape(sd: Mapping[str, Tensor], key: str, source: str, what: str, meaning: str) -> tuple[int, int]:
    """The shape of a 2-D weight used to infer sizes; ``meaning`` describes it, e.g. ``(hidden, obs_dim)``."""
    if key not in sd:
        raise InputError(f"{source}: does not match a {what}: {key!r}: expected shape {meaning}, found none")
    shape = _shape(sd[key])
    if len(shape) != 2:
        raise InputError(f"{source}: does not match a {what}: {key!r}: expected shape {meaning}, found shape {shape}")
    return shape[0], shape[1]


def _load_strict(module: nn.Module, sd: Mapping[str, Tensor], source: str, what: str) -> None:
    """Load ``sd`` into ``module`` after checking keys and shapes; every problem is named in the error."""
    expected = {k: _shape(v) for k, v in module.state_dict().items()}
    problems = [
        _problem(k, shape, _shape(sd[k]) if k in sd else None)
        for k, shape in expected.items()
        if k not in sd or _shape(sd[k]) != shape
    ]
    problems += [_problem(k, None, _shape(v)) for k, v in sd.items() if k not in expected]
    if problems:
        _raise(source, what, problems)
    module.load_state_dict(dict(sd), strict=True)
    module.eval()


def _max_index(sd: Mapping[str, Tensor], pattern: str) -> int:
    """1 + the largest integer captured by ``pattern`` over the keys (0 when none match)."""
    rx = re.compile(pattern)
    found = [int(m.group(1)) for k in sd if (m := rx.match(k))]
    return max(found) + 1 if found else 0


def _normalize_actor_keys(sd: Mapping[str, Tensor], act_dim: int, source: str, what: str) -> StateDict:
    """Drop ignored keys and bring an upstream on-policy log-std layout to the original ``log_std`` (act_dim,)."""
    out = {k: v for k, v in sd.items() if not k.startswith(IGNORED_PREFIXES)}
    if LOGSTD_KEY in out:
        return out
    alias = next((a for a in LOGSTD_ALIASES if a in out), None)
    if alias is not None:
        value = out.pop(alias)
        expected = (act_dim, *LOGSTD_ALIASES[alias])
        if _shape(value) != expected:
            _raise(source, what, [_problem(alias, expected, _shape(value))])
        out[LOGSTD_KEY] = value.reshape(act_dim)
    return out


def _refuse_other_kind(sd: Mapping[str, Tensor], source: str, what: str, marker: str, kind: str, hint: str) -> None:
    """One clear line when ``sd`` is a checkpoint of the other algorithm (it has the key ``marker``)."""
    if marker in sd:
        raise InputError(f"{source}: is a {kind} checkpoint (it has {marker!r}), not a {what}: {hint}")


def actor_from_state_dict(sd: Mapping[str, Tensor], source: str) -> tuple[Actor, dict[str, Any]]:
    """Build the MAPPO actor a state dict was saved from and load it strictly.

    Sizes are inferred: obs_dim and hidden from ``base.mlp.fc1.0.weight`` (hidden, obs_dim), act_dim from
    ``act.action_out.fc_mean.weight`` (act_dim, hidden), layer_N = number of ``base.mlp.fc2.N`` blocks,
    recurrent_N = number of GRU layers ``rnn.rnn.*_lN``. ``source`` names the checkpoint in errors.

    Returns the module (eval mode) and its architecture facts
    ``{"architecture", "obs_dim", "act_dim", "hidden", "layer_N", "recurrent_N", "activation"}``.
    """
    what = "MAPPO actor"
    if "base.mlp.fc1.0.weight" not in sd:
        _refuse_other_kind(sd, source, what, "actor.0.weight", "PPO actor-critic", "export it with --ppo")
    hidden, obs_dim = _matrix_shape(sd, "base.mlp.fc1.0.weight", source, what, "(hidden, obs_dim)")
    act_dim, _ = _matrix_shape(sd, "act.action_out.fc_mean.weight", source, what, f"(act_dim, {hidden})")
    layer_N = _max_index(sd, r"^base\.mlp\.fc2\.(\d+)\.")
    recurrent_N = _max_index(sd, r"^rnn\.rnn\.(?:weight|bias)_(?:ih|hh)_l(\d+)$")
    actor = Actor(obs_dim, act_dim, hidden, layer_N, recurrent_N)
    _load_strict(actor, _normalize_actor_keys(sd, act_dim, source, what), source, what)
    info = {
        "architecture": "mappo_actor",
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "hidden": hidden,
        "layer_N": layer_N,
        "recurrent_N": recurrent_N,
        "activation": "elu",
    }
    return actor, info


def _mlp_widths(sd: Mapping[str, Tensor], prefix: str, source: str, what: str) -> tuple[int, list[int], int]:
    """(input size, hidden widths, output size) of an ``_elu_mlp`` saved under ``prefix`` (e.g. ``"actor"``),
    read from its Linear weights ``prefix.0/2/4/....weight``. A missing or non-matrix weight raises
    :class:`InputError` naming it and the keys under ``prefix`` that are not the original's; other
    mismatches (widths that do not chain, odd indices) are named by the strict load."""
    n_layers = (_max_index(sd, rf"^{re.escape(prefix)}\.(\d+)\.") + 1) // 2
    shapes: list[tuple[int, ...]] = []
    problems: list[str] = []
    for i in range(max(n_layers, 1)):
        key = f"{prefix}.{2 * i}.weight"
        found = _shape(sd[key]) if key in sd else None
        if found is not None and len(found) == 2:
            shapes.append(found)
        else:
            meaning = f"(outputs, {shapes[-1][0]})" if shapes else "(outputs, inputs)"
            problems.append(f"{key!r}: expected shape {meaning}, found {_describe(found)}")
    if problems:
        expected = {f"{prefix}.{2 * i}.{p}" for i in range(max(n_layers, 1)) for p in ("weight", "bias")}
        problems += [_problem(k, None, _shape(v)) for k, v in sd.items() if k.startswith(prefix + ".") and k not in expected]
        _raise(source, what, problems)
    return shapes[0][1], [out for out, _ in shapes[:-1]], shapes[-1][0]


def ppo_from_state_dict(sd: Mapping[str, Tensor], source: str) -> tuple[PPOActorCritic, dict[str, Any]]:
    """Build the PPO actor-critic a state dict was saved from and load it strictly.

    Sizes are inferred from the Linear weights ``actor.{0,2,..}.weight`` / ``critic.{0,2,..}.weight``;
    ``source`` names the checkpoint in errors. Returns the module (eval mode) and its architecture facts
    ``{"architecture", "obs_dim", "act_dim", "hidden_sizes", "critic_obs_dim", "critic_hidden_sizes", "activation"}``.
    """
    what = "PPO actor-critic"
    if "actor.0.weight" not in sd:
        _refuse_other_kind(sd, source, what, "base.mlp.fc1.0.weight", "MAPPO actor", "export it with --thrower/--catcher")
        _refuse_other_kind(sd, source, what, "a2c_network.mu.weight", "rl_games", "only the Dynamic Handover code "
                           "base's own PPO (keys actor.N.*, critic.N.*, log_std) is supported")
    obs_dim, hidden, act_dim = _mlp_widths(sd, "actor", source, what)
    critic_obs_dim, critic_hidden, _ = _mlp_widths(sd, "critic", source, what)
    net = PPOActorCritic(obs_dim, act_dim, hidden, critic_hidden, critic_obs_dim)
    _load_strict(net, sd, source, what)
    info = {
        "architecture": "ppo_actor_critic",
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "hidden_sizes": hidden,
        "critic_obs_dim": critic_obs_dim,
        "critic_hidden_sizes": critic_hidden,
        "activation": "elu",
    }
    return net, info


_Estimator = TypeVar("_Estimator", bound=EstimatorMLP)


def _estimator_from_state_dict(
    cls: type[_Estimator], sd: Mapping[str, Tensor], source: str, what: str
) -> tuple[_Estimator, dict[str, Any]]:
    """Infer the layer sizes from the four weight matrices, build ``cls`` and load ``sd`` strictly."""
    h1, input_dim = _matrix_shape(sd, "linear1.weight", source, what, "(hidden1, input_dim)")
    h2, _ = _matrix_shape(sd, "linear2.weight", source, what, f"(hidden2, {h1})")
    h3, _ = _matrix_shape(sd, "linear3.weight", source, what, f"(hidden3, {h2})")
    output_dim, _ = _matrix_shape(sd, "output_layer.weight", source, what, f"(output_dim, {h3})")
    net = cls(input_dim, output_dim, (h1, h2, h3))
    _load_strict(net, sd, source, what)
    info = {
        "architecture": cls.__name__,
        "input_dim": input_dim,
        "output_dim": output_dim,
        "hidden_sizes": [h1, h2, h3],
        "activation": "elu",
    }
    return net, info


def goal_estimator_from_state_dict(sd: Mapping[str, Tensor], source: str) -> tuple[TrajEstimator, dict[str, Any]]:
    """Build and strictly load the goal (trajectory) estimator; sizes from the state dict.

    Info keys: ``architecture, input_dim, output_dim, hidden_sizes, activation``.
    """
    return _estimator_from_state_dict(TrajEstimator, sd, source, "goal estimator (TrajEstimator)")


def property_estimator_from_state_dict(
    sd: Mapping[str, Tensor], source: str
) -> tuple[PropertyEstimator, dict[str, Any]]:
    """Build and strictly load the property estimator; the input must be 20 x 47 (positions) or
    20 x 91 (positions and torques).

    Info keys: those of the goal estimator plus ``history_len, step_size, with_torques``.
    """
    what = "property estimator"
    _, input_dim = _matrix_shape(sd, "linear1.weight", source, what, "(hidden1, input_dim)")
    if input_dim not in PROPERTY_INPUT_SIZES:
        raise InputError(
            f"{source}: does not match a {what}: 'linear1.weight' expected shape (hidden1, {PROPERTY_INPUT_SIZES[0]}) "
            f"or (hidden1, {PROPERTY_INPUT_SIZES[1]}) ({PROPERTY_HISTORY_LEN} steps x {PROPERTY_STEP_SIZES[0]} "
            f"or {PROPERTY_STEP_SIZES[1]}), found shape {_shape(sd['linear1.weight'])}"
        )
    net, info = _estimator_from_state_dict(PropertyEstimator, sd, source, what)
    step = input_dim // PROPERTY_HISTORY_LEN
    info.update(history_len=PROPERTY_HISTORY_LEN, step_size=step, with_torques=step == PROPERTY_STEP_SIZES[1])
    return net, info
