"""Checkpoints with the Dynamic Handover code base's exact parameter names, MAPPO and PPO, through
``handover export`` and the runtime.

The module trees below are written here from the original code (not imported from
``handover.runtime.networks``), so these tests check that our loader accepts the original's names
and computes the original's deployed forward:

- MAPPO actor (``algorithms/marl/actor_critic.py`` ``Actor`` with ``utils/mlp.py``, ``utils/act.py``,
  ``utils/distributions.py``): ``base.feature_norm`` is a LayerNorm over the 450 inputs;
  ``base.mlp.fc1`` is Sequential(Linear 450->512, ELU, LayerNorm 512), so its parameters sit at
  indices 0 and 2; ``base.mlp.fc2`` is a ModuleList of layer_N = 2 such blocks (512->512);
  ``act.action_out`` is the DiagGaussian: ``fc_mean`` Linear 512->22 (the deployed action) and the
  parameter ``log_std`` (22,) with std = 0.5 * sigmoid(log_std).
- PPO actor-critic (``algorithms/sarl/ppo/module.py`` ``ActorCritic``, saved whole by ``PPO.save``):
  ``actor`` is one Sequential Linear 900->1024, ELU, Linear 1024->1024, ELU, Linear 1024->512, ELU,
  Linear 512->44 (Linears at 0, 2, 4, 6); ``critic`` the same widths ending in 1 output; ``log_std``
  (44,) with std = exp(log_std). The deployed action is ``actor(obs)`` (``act_inference``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

from handover.cli import main as cli_main  # noqa: E402
from handover.runtime.bundle import MANIFEST_NAME, BundleError, load_manifest  # noqa: E402
from handover.runtime.errors import InputError  # noqa: E402
from handover.runtime.export import export_bundle, export_ppo_bundle  # noqa: E402
from handover.runtime.policy_networks import FusedSingleActor, PolicyNetworks  # noqa: E402
from handover.runtime.policy_step import PolicyStep  # noqa: E402

N_SAMPLES = 1000
TOL = 1e-5


# ----------------------------------------------------------------------------------------------
# The original module trees
# ----------------------------------------------------------------------------------------------


def _block(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ELU(), nn.LayerNorm(n_out))


class OriginalMLPLayer(nn.Module):
    def __init__(self, n_in: int, hidden: int, layer_N: int):
        super().__init__()
        self.fc1 = _block(n_in, hidden)
        self.fc2 = nn.ModuleList([_block(hidden, hidden) for _ in range(layer_N)])

    def forward(self, x):
        x = self.fc1(x)
        for block in self.fc2:
            x = block(x)
        return x


class OriginalMLPBase(nn.Module):
    def __init__(self, n_in: int, hidden: int, layer_N: int):
        super().__init__()
        self.feature_norm = nn.LayerNorm(n_in)
        self.mlp = OriginalMLPLayer(n_in, hidden, layer_N)

    def forward(self, x):
        return self.mlp(self.feature_norm(x))


class OriginalDiagGaussian(nn.Module):
    def __init__(self, hidden: int, act_dim: int):
        super().__init__()
        self.fc_mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Parameter(torch.ones(act_dim))  # std = 0.5 * sigmoid(log_std)


class OriginalACTLayer(nn.Module):
    def __init__(self, hidden: int, act_dim: int):
        super().__init__()
        self.action_out = OriginalDiagGaussian(hidden, act_dim)


class OriginalMAPPOActor(nn.Module):
    """Deterministic forward: obs (B, 450) -> action mean (B, 22) (the Gaussian's mode)."""

    def __init__(self, n_in: int = 450, act_dim: int = 22, hidden: int = 512, layer_N: int = 2):
        super().__init__()
        self.base = OriginalMLPBase(n_in, hidden, layer_N)
        self.act = OriginalACTLayer(hidden, act_dim)

    def forward(self, obs):
        return self.act.action_out.fc_mean(self.base(obs))


def _elu_stack(n_in: int, widths: list[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(n_in, w), nn.ELU()]
        n_in = w
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


class OriginalPPOActorCritic(nn.Module):
    """Deterministic forward (``act_inference``): obs (B, 900) -> action mean (B, 44)."""

    def __init__(self, n_obs: int = 900, n_act: int = 44, widths: tuple[int, ...] = (1024, 1024, 512)):
        super().__init__()
        self.actor = _elu_stack(n_obs, list(widths), n_act)
        self.critic = _elu_stack(n_obs, list(widths), 1)
        self.log_std = nn.Parameter(np.log(0.8) * torch.ones(n_act))  # init_noise_std 0.8; std = exp(log_std)

    def forward(self, obs):
        return self.actor(obs)


class OriginalTrajEstimator(nn.Module):
    def __init__(self, n_in: int = 60, n_out: int = 3):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(n_in, 512), nn.Linear(512, 256)
        self.linear3, self.output_layer = nn.Linear(256, 128), nn.Linear(128, n_out)

    def forward(self, x):
        elu = nn.functional.elu
        return self.output_layer(elu(self.linear3(elu(self.linear2(elu(self.linear1(x)))))))


_PPO_LINEARS = {0: (1024, 900), 2: (1024, 1024), 4: (512, 1024)}
PPO_KEYS = {
    "log_std": (44,),
    **{f"{net}.{i}.weight": shape for net in ("actor", "critic") for i, shape in _PPO_LINEARS.items()},
    **{f"{net}.{i}.bias": (shape[0],) for net in ("actor", "critic") for i, shape in _PPO_LINEARS.items()},
    "actor.6.weight": (44, 512),
    "actor.6.bias": (44,),
    "critic.6.weight": (1, 512),
    "critic.6.bias": (1,),
}


def split_observation(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The contract's per-agent inputs of a (..., 900) observation: thrower, catcher (..., 450) each."""
    t = np.concatenate([obs[..., 0:150], obs[..., 300:450], obs[..., 600:750]], axis=-1)
    c = np.concatenate([obs[..., 150:300], obs[..., 450:600], obs[..., 750:900]], axis=-1)
    return t, c


def uniform(shape: tuple[int, ...], half: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen) * 2 - 1) * half


def max_abs(a: np.ndarray, b: torch.Tensor) -> float:
    assert a.shape == tuple(b.shape)
    return float(np.abs(a - b.numpy()).max())


# ----------------------------------------------------------------------------------------------
# Fixtures: checkpoints saved as state dicts, bundles written by the real CLI
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(tmp_path_factory, randomize) -> dict:
    folder = tmp_path_factory.mktemp("original")
    nets = {
        "actor_agent0": randomize(OriginalMAPPOActor(), 21),
        "actor_agent1": randomize(OriginalMAPPOActor(), 22),
        "model_5000": randomize(OriginalPPOActorCritic(), 23),
        "model": randomize(OriginalTrajEstimator(60, 3), 24),
        "property": randomize(OriginalTrajEstimator(940, 1), 25),
    }
    paths = {}
    for name, net in nets.items():
        paths[name] = folder / f"{name}.pt"
        torch.save(net.state_dict(), paths[name])
    return {"nets": nets, "paths": paths}


def _cli_export(args: list[str], out: Path) -> Path:
    assert cli_main(["export", *args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def mappo_bundle(originals, tmp_path_factory) -> Path:
    p = originals["paths"]
    return _cli_export(["--thrower", str(p["actor_agent0"]), "--catcher", str(p["actor_agent1"]),
                        "--goal", str(p["model"])], tmp_path_factory.mktemp("mappo") / "bundle")


@pytest.fixture(scope="module")
def ppo_bundle(originals, tmp_path_factory) -> Path:
    """PPO policy, goal estimator and property estimator."""
    p = originals["paths"]
    return _cli_export(["--ppo", str(p["model_5000"]), "--goal", str(p["model"]), "--property", str(p["property"])],
                       tmp_path_factory.mktemp("ppo") / "bundle")


@pytest.fixture(scope="module")
def ppo_bundle_plain(originals, tmp_path_factory) -> Path:
    """PPO policy and goal estimator only."""
    p = originals["paths"]
    return _cli_export(["--ppo", str(p["model_5000"]), "--goal", str(p["model"])], tmp_path_factory.mktemp("ppo_plain") / "bundle")


def _session(folder: Path, file: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / file), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# The checkpoints have the original names
# ----------------------------------------------------------------------------------------------


def test_test_trees_have_the_original_names(originals, original_actor_keys):
    shapes = {name: {k: tuple(v.shape) for k, v in net.state_dict().items()} for name, net in originals["nets"].items()}
    assert shapes["actor_agent0"] == original_actor_keys
    assert shapes["model_5000"] == PPO_KEYS


# ----------------------------------------------------------------------------------------------
# MAPPO with the original names
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role, name", [("thrower_actor", "actor_agent0"), ("catcher_actor", "actor_agent1")])
def test_original_mappo_actor_exports_and_matches_torch(mappo_bundle, originals, role, name):
    manifest = load_manifest(mappo_bundle)
    assert manifest.algorithm == "mappo"
    assert manifest.networks[role].info["layer_N"] == 2 and manifest.networks[role].info["hidden"] == 512
    x = uniform((N_SAMPLES, 450), 5.0, seed=30)
    (got,) = _session(mappo_bundle, f"{role}.onnx").run(None, {"obs": x.numpy()})
    with torch.no_grad():
        want = originals["nets"][name](x)
    assert max_abs(got, want) <= TOL


def test_original_mappo_actor_loads_strictly_with_its_log_std(originals):
    from handover.runtime.networks import actor_from_state_dict, load_checkpoint

    path = originals["paths"]["actor_agent1"]
    actor, info = actor_from_state_dict(load_checkpoint(path), str(path))
    original = originals["nets"]["actor_agent1"].act.action_out.log_std.detach()
    torch.testing.assert_close(actor.act.action_out.log_std.detach(), original)
    torch.testing.assert_close(actor.act.action_out.std(), 0.5 * torch.sigmoid(original))
    assert (info["layer_N"], info["hidden"], info["obs_dim"], info["act_dim"]) == (2, 512, 450, 22)


# ----------------------------------------------------------------------------------------------
# PPO
# ----------------------------------------------------------------------------------------------


def test_ppo_bundle_manifest(ppo_bundle, originals):
    m = load_manifest(ppo_bundle)
    assert m.algorithm == "ppo"
    assert list(m.networks) == ["policy", "goal_estimator", "property_estimator"]
    policy = m.networks["policy"]
    assert policy.file == "policy.onnx"
    assert [(t.name, t.shape) for t in policy.inputs] == [("obs", ("batch", 900))]
    assert [(t.name, t.shape) for t in policy.outputs] == [("action", ("batch", 44))]
    assert policy.info == {
        "architecture": "ppo_actor_critic", "obs_dim": 900, "act_dim": 44, "hidden_sizes": [1024, 1024, 512],
        "critic_obs_dim": 900, "critic_hidden_sizes": [1024, 1024, 512], "activation": "elu",
    }
    assert m.provenance["sources"]["policy"]["path"] == str(originals["paths"]["model_5000"].resolve())
    assert m.provenance["check"]["max_abs_diff"]["policy"] <= TOL
    assert json.loads((ppo_bundle / MANIFEST_NAME).read_text())["algorithm"] == "ppo"
    assert sorted(p.name for p in ppo_bundle.iterdir()) == sorted(
        [MANIFEST_NAME, "policy.onnx", "goal_estimator.onnx", "property_estimator.onnx"])


@pytest.mark.parametrize(
    "file, name, size, half",
    [("policy.onnx", "model_5000", 900, 5.0), ("goal_estimator.onnx", "model", 60, 1.0),
     ("property_estimator.onnx", "property", 940, 3.0)],
)
def test_ppo_bundle_onnx_matches_torch(ppo_bundle, originals, file, name, size, half):
    x = uniform((N_SAMPLES, size), half, seed=31)
    sess = _session(ppo_bundle, file)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = originals["nets"][name](x)
    assert max_abs(got, want) <= TOL
    (one,) = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})
    np.testing.assert_allclose(one[0], got[0], rtol=0, atol=TOL)


def test_ppo_bundle_runs_through_the_actors_interface(ppo_bundle_plain, originals):
    """Per-agent inputs in (as the policy step builds them), the policy on the rebuilt 900 observation."""
    nets = PolicyNetworks.load(ppo_bundle_plain, warmup=2)
    assert isinstance(nets.actors, FusedSingleActor) and nets.actors.property_input_size is None
    obs = uniform((50, 900), 5.0, seed=32)
    with torch.no_grad():
        want = originals["nets"]["model_5000"](obs)
    t_in, c_in = split_observation(obs.numpy())
    for k in range(len(obs)):
        action, props = nets.actors.run(t_in[k], c_in[k], None)
        assert props is None and action.shape == (44,) and action.dtype == np.float32
        np.testing.assert_allclose(action, want[k].numpy(), rtol=0, atol=TOL)


def test_ppo_bundle_with_property_estimator_runs_both(ppo_bundle, originals):
    nets = PolicyNetworks.load(ppo_bundle, warmup=2)
    assert nets.actors.property_input_size == 940
    obs, window = uniform((1, 900), 5.0, seed=33), uniform((1, 940), 3.0, seed=34)
    t_in, c_in = split_observation(obs.numpy()[0])
    action, props = nets.actors.run(t_in, c_in, window.numpy()[0])
    with torch.no_grad():
        np.testing.assert_allclose(action, originals["nets"]["model_5000"](obs)[0].numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(props, originals["nets"]["property"](window)[0].numpy(), rtol=0, atol=TOL)


def test_ppo_policy_step_feeds_the_policy_the_contract_observation(ppo_bundle_plain, originals, spec):
    """Through the whole policy step: the action is the PPO policy on the observation rebuilt from the
    step's own per-agent inputs (frame order current, previous, oldest; thrower part then catcher part)."""
    step = PolicyStep(spec, PolicyNetworks.load(ppo_bundle_plain, warmup=2))
    rng = np.random.default_rng(35)
    goal = np.array([0.025, -0.93, 0.549], np.float32)
    for k in range(5):
        q = (spec.default + rng.normal(0, 0.02, 44)).astype(np.float32)
        res = step.step(q[:22], q[22:], np.array([0.025, -0.38 - 0.03 * k, 0.449], np.float32), goal)
        t, c = res.thrower_input.reshape(3, 150), res.catcher_input.reshape(3, 150)
        obs = np.concatenate([np.concatenate([t[f], c[f]]) for f in range(3)])
        with torch.no_grad():
            want = originals["nets"]["model_5000"](torch.from_numpy(obs)[None])[0].numpy()
        np.testing.assert_allclose(res.action, want, rtol=0, atol=TOL)


def test_actors_reject_a_wrong_per_agent_input(ppo_bundle_plain):
    nets = PolicyNetworks.load(ppo_bundle_plain, warmup=0)
    good = np.zeros(450, np.float32)
    with pytest.raises(InputError, match=r"policy: input 'catcher_in' must have shape \(450,\)"):
        nets.actors.run(good, np.zeros(449, np.float32), None)
    bad = good.copy()
    bad[7] = np.nan
    with pytest.raises(InputError, match=r"policy: input 'thrower_in' is not finite at index \[0, 7\]"):
        nets.actors.run(bad, good, None)


def test_ppo_export_replaces_a_mappo_bundle(originals, tmp_path):
    p = originals["paths"]
    export_bundle(tmp_path, p["actor_agent0"], p["actor_agent1"], p["model"])
    export_ppo_bundle(tmp_path, p["model_5000"], p["model"])
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([MANIFEST_NAME, "policy.onnx", "goal_estimator.onnx"])


def test_runtime_runs_a_ppo_bundle_without_torch(ppo_bundle_plain):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from handover.runtime.policy_networks import PolicyNetworks\n"
        f"nets = PolicyNetworks.load({str(ppo_bundle_plain)!r}, warmup=1)\n"
        "a, _ = nets.actors.run(np.zeros(450, np.float32), np.zeros(450, np.float32), None)\n"
        "assert a.shape == (44,)\n"
        "import handover.cli; handover.cli.build_parser()\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# Bad checkpoints and options: one line naming the file and the key
# ----------------------------------------------------------------------------------------------


def _broken_ppo(sd: dict, kind: str) -> tuple[dict, str]:
    sd = dict(sd)
    if kind == "renamed":
        sd["actor.2.weights"] = sd.pop("actor.2.weight")
        return sd, "'actor.2.weight': expected shape (outputs, 1024), found none; 'actor.2.weights': expected none, found shape (1024, 1024)"
    if kind == "misshaped":
        sd["actor.4.bias"] = torch.zeros(511)
        return sd, "'actor.4.bias': expected shape (512,), found shape (511,)"
    sd["log_std"] = torch.zeros(44, 1)
    return sd, "'log_std': expected shape (44,), found shape (44, 1)"


@pytest.mark.parametrize("kind", ["renamed", "misshaped", "log_std"])
def test_bad_ppo_checkpoint_is_one_line_naming_file_and_key(originals, tmp_path, capsys, kind):
    sd, expected = _broken_ppo(originals["nets"]["model_5000"].state_dict(), kind)
    bad = tmp_path / "model_7.pt"
    torch.save(sd, bad)
    with pytest.raises(InputError) as err:
        export_ppo_bundle(tmp_path / "b", bad, originals["paths"]["model"])
    msg = str(err.value)
    assert msg.startswith(f"{bad}: does not match a PPO actor-critic: ") and expected in msg and "\n" not in msg, msg
    assert cli_main(["export", "--ppo", str(bad), "--goal", str(originals["paths"]["model"]), "--out", str(tmp_path / "b")]) == 2
    printed = capsys.readouterr().err.strip()
    assert len(printed.splitlines()) == 1 and str(bad) in printed and expected in printed
    assert not (tmp_path / "b" / MANIFEST_NAME).exists()


def test_bad_original_mappo_log_std_names_file_and_key(originals, tmp_path):
    sd = dict(originals["nets"]["actor_agent0"].state_dict())
    sd["act.action_out.log_std"] = torch.zeros(23)
    bad = tmp_path / "actor_agent0.pt"
    torch.save(sd, bad)
    with pytest.raises(InputError) as err:
        export_bundle(tmp_path / "b", bad, originals["paths"]["actor_agent1"], originals["paths"]["model"])
    msg = str(err.value)
    assert str(bad) in msg and "'act.action_out.log_std': expected shape (22,), found shape (23,)" in msg and "\n" not in msg


def test_checkpoint_of_the_other_algorithm_is_named(originals, tmp_path):
    p = originals["paths"]
    with pytest.raises(InputError, match=r"actor_agent0\.pt: is a MAPPO actor checkpoint .* --thrower/--catcher"):
        export_ppo_bundle(tmp_path, p["actor_agent0"], p["model"])
    with pytest.raises(InputError, match=r"model_5000\.pt: is a PPO actor-critic checkpoint .* --ppo"):
        export_bundle(tmp_path, p["model_5000"], p["actor_agent1"], p["model"])


def test_ppo_checkpoint_with_other_sizes_is_refused_by_the_contract(tmp_path, originals):
    small = tmp_path / "small.pt"
    torch.save(OriginalPPOActorCritic(450, 44, (32, 16)).state_dict(), small)
    with pytest.raises(InputError, match=r"small\.pt: PPO policy takes 450 inputs, .* stacked observation has 900"):
        export_ppo_bundle(tmp_path / "b", small, originals["paths"]["model"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ppo", "p.pt", "--thrower", "a.pt"], "--ppo exports one policy for both hands: give it without --thrower/--catcher"),
        (["--thrower", "a.pt"], "--catcher missing: give both MAPPO actors"),
        ([], "--thrower and --catcher missing"),
    ],
)
def test_cli_wants_two_actors_or_one_policy(tmp_path, capsys, args, message):
    assert cli_main(["export", *args, "--goal", "g.pt", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# Manifests of the other algorithm
# ----------------------------------------------------------------------------------------------


def _edit(folder: Path, edit) -> None:
    path = folder / MANIFEST_NAME
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def test_manifest_roles_must_fit_the_algorithm(ppo_bundle_plain, mappo_bundle, tmp_path):
    import shutil

    ppo = shutil.copytree(ppo_bundle_plain, tmp_path / "ppo")
    _edit(ppo, lambda m: m.update(algorithm="mappo"))
    with pytest.raises(BundleError, match=r"networks.thrower_actor missing"):
        load_manifest(ppo)
    _edit(ppo, lambda m: m.update(algorithm="sac"))
    with pytest.raises(BundleError, match=r"algorithm 'sac' unknown \(known: \['mappo', 'ppo'\]\)"):
        load_manifest(ppo)
    mappo = shutil.copytree(mappo_bundle, tmp_path / "mappo")
    _edit(mappo, lambda m: m.pop("algorithm"))  # manifests written before PPO support
    assert load_manifest(mappo).algorithm == "mappo"
    shutil.copy(ppo / "policy.onnx", mappo / "policy.onnx")
    _edit(mappo, lambda m: m["networks"].update(policy=json.loads((ppo / MANIFEST_NAME).read_text())["networks"]["policy"]))
    with pytest.raises(BundleError, match=r"networks.policy: not a role of a mappo bundle"):
        load_manifest(mappo)
