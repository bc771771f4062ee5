"""Export of training checkpoints to ONNX bundles (``handover.runtime.export``, ``handover.runtime.networks``).

Checkpoints are saved from networks with the original Dynamic Handover module trees and randomized
weights (LayerNorm gains and biases included). The torch side of every comparison is an independent
re-implementation of the original forward passes from the raw state dict (functional ops, GRU gate
equations written out), so the check covers the module tree and the deployed semantics, not only
the exporter.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
F = torch.nn.functional

from handover.cli import main as cli_main  # noqa: E402
from handover.runtime.bundle import MANIFEST_NAME, load_manifest  # noqa: E402
from handover.runtime.contract import CONTRACT_VERSION  # noqa: E402
from handover.runtime.errors import InputError  # noqa: E402
from handover.runtime.export import export_bundle  # noqa: E402
from handover.runtime.networks import (  # noqa: E402
    actor_from_state_dict,
    load_checkpoint,
    make_actor,
    property_estimator_from_state_dict,
)

N_SAMPLES = 1000
TOL = 1e-5
MAX_DIFFS: dict[str, float] = {}  # filled by the comparisons, printed at the end (pytest -s)

ORIGINAL_GRU_KEYS = {
    "rnn.rnn.weight_ih_l0": (1536, 512),
    "rnn.rnn.weight_hh_l0": (1536, 512),
    "rnn.rnn.bias_ih_l0": (1536,),
    "rnn.rnn.bias_hh_l0": (1536,),
    "rnn.norm.weight": (512,),
    "rnn.norm.bias": (512,),
}


class OriginalTrajEstimator(torch.nn.Module):
    """The goal estimator's module tree as the contract describes it (parameter names ``linear1..3``,
    ``output_layer``; ELU between); like the training code, its forward also returns the features."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.linear1 = torch.nn.Linear(input_dim, 512)
        self.linear2 = torch.nn.Linear(512, 256)
        self.linear3 = torch.nn.Linear(256, 128)
        self.output_layer = torch.nn.Linear(128, output_dim)
        self.elu = torch.nn.ELU()

    def forward(self, inputs):
        x = self.elu(self.linear1(inputs))
        x = self.elu(self.linear2(x))
        x = self.elu(self.linear3(x))
        return self.output_layer(x), x


# ----------------------------------------------------------------------------------------------
# Reference forwards from the raw state dict
# ----------------------------------------------------------------------------------------------


def _ln(sd, prefix, x):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"])


def _dense(sd, prefix, x):
    return _ln(sd, f"{prefix}.2", F.elu(F.linear(x, sd[f"{prefix}.0.weight"], sd[f"{prefix}.0.bias"])))


def reference_actor(sd, obs, state=None):
    """MAPPO actor, deterministic: obs (B, 450)[, state (B, L, H)] -> mean (B, 22)[, new state (B, L, H)]."""
    x = _dense(sd, "base.mlp.fc1", _ln(sd, "base.feature_norm", obs))
    i = 0
    while f"base.mlp.fc2.{i}.0.weight" in sd:
        x = _dense(sd, f"base.mlp.fc2.{i}", x)
        i += 1
    new_state = []
    if state is not None:
        for layer in range(state.shape[1]):
            h = state[:, layer]
            gi = F.linear(x, sd[f"rnn.rnn.weight_ih_l{layer}"], sd[f"rnn.rnn.bias_ih_l{layer}"])
            gh = F.linear(h, sd[f"rnn.rnn.weight_hh_l{layer}"], sd[f"rnn.rnn.bias_hh_l{layer}"])
            (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            x = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
            new_state.append(x)
        x = _ln(sd, "rnn.norm", x)
    mean = F.linear(x, sd["act.action_out.fc_mean.weight"], sd["act.action_out.fc_mean.bias"])
    return (mean, torch.stack(new_state, 1)) if state is not None else mean


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def report_max_diffs():
    """Prints the largest |onnxruntime - torch| seen per network after the module (visible with ``pytest -s``)."""
    yield
    if MAX_DIFFS:
        print(f"\nmax |onnxruntime - torch| over {N_SAMPLES} inputs: " + json.dumps({k: f"{v:.2e}" for k, v in MAX_DIFFS.items()}))


@pytest.fixture(scope="module")
def originals(tmp_path_factory, randomize) -> dict:
    """The original networks (randomized) and their checkpoints, named like the training output."""
    folder = tmp_path_factory.mktemp("ckpt")
    nets = {
        "actor_agent0": randomize(make_actor(layer_N=2), 1),
        "actor_agent1": randomize(make_actor(layer_N=2), 2),
        "model": randomize(OriginalTrajEstimator(60, 3), 3),
        "property": randomize(OriginalTrajEstimator(940, 1), 4),
        "recurrent/actor_agent1": randomize(make_actor(layer_N=2, recurrent_N=1), 5),
    }
    paths = {}
    for name, net in nets.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].parent.mkdir(exist_ok=True)
        torch.save(net.state_dict(), paths[name])
    return {"nets": nets, "paths": paths, "sd": {k: v.state_dict() for k, v in nets.items()}}


@pytest.fixture(scope="module")
def api_bundle(originals, tmp_path_factory) -> Path:
    p = originals["paths"]
    out = tmp_path_factory.mktemp("api") / "bundle"
    export_bundle(out, p["actor_agent0"], p["actor_agent1"], p["model"], property=p["property"], property_labels=("mass",))
    return out


@pytest.fixture(scope="module")
def cli_bundle(originals, tmp_path_factory) -> tuple[Path, int]:
    """Bundle with the recurrent catcher, written by ``handover export``; returns (folder, exit code)."""
    p = originals["paths"]
    out = tmp_path_factory.mktemp("cli") / "bundle"
    code = cli_main(
        ["export", "--thrower", str(p["actor_agent0"]), "--catcher", str(p["recurrent/actor_agent1"]),
         "--goal", str(p["model"]), "--property", str(p["property"]), "--property-labels", "mass", "--out", str(out)]
    )
    return out, code


def _session(folder: Path, role: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / f"{role}.onnx"), providers=["CPUExecutionProvider"])


def _record(key: str, diff: float) -> None:
    MAX_DIFFS[key] = max(MAX_DIFFS.get(key, 0.0), diff)
    assert diff <= TOL, f"{key}: onnxruntime and torch differ by {diff:.3g}"


def _max_abs(a: np.ndarray, b: torch.Tensor) -> float:
    assert a.shape == tuple(b.shape)
    return float(np.abs(a - b.numpy()).max())


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_module_tree_is_the_original(original_actor_keys):
    ff = {k: tuple(v.shape) for k, v in make_actor().state_dict().items()}
    assert ff == original_actor_keys
    rec = {k: tuple(v.shape) for k, v in make_actor(recurrent_N=1).state_dict().items()}
    assert rec == {**original_actor_keys, **ORIGINAL_GRU_KEYS}


@pytest.mark.parametrize(
    "role, name, input_name, half_range",
    [
        ("thrower_actor", "actor_agent0", "obs", 5.0),
        ("catcher_actor", "actor_agent1", "obs", 5.0),
        ("goal_estimator", "model", "history", 1.0),
        ("property_estimator", "property", "window", 3.0),
    ],
)
def test_onnx_matches_torch(api_bundle, originals, role, name, input_name, half_range):
    gen = torch.Generator().manual_seed(10)
    x = (torch.rand(N_SAMPLES, *_session(api_bundle, role).get_inputs()[0].shape[1:], generator=gen) * 2 - 1) * half_range
    (got,) = _session(api_bundle, role).run(None, {input_name: x.numpy()})
    with torch.no_grad():
        if role.endswith("_actor"):
            ref = reference_actor(originals["sd"][name], x)
            assert _max_abs(originals["nets"][name](x).numpy(), ref) < TOL  # the rebuilt tree computes the same
        else:
            ref = originals["nets"][name](x)[0]  # the original module's forward returns (outputs, features)
    _record(role, _max_abs(got, ref))
    # Single-sample calls (the deployment case) give the same as the batch.
    (one,) = _session(api_bundle, role).run(None, {input_name: x[:1].numpy()})
    np.testing.assert_allclose(one[0], got[0], rtol=0, atol=TOL)


def test_recurrent_actor_via_cli_steps_like_torch(cli_bundle, originals):
    out, code = cli_bundle
    assert code == 0
    sd = originals["sd"]["recurrent/actor_agent1"]
    sess = _session(out, "catcher_actor")
    batch, steps = 20, N_SAMPLES // 20
    gen = torch.Generator().manual_seed(11)
    state = torch.zeros(batch, 1, 512)
    onnx_state = state.numpy()
    for _ in range(steps):
        obs = (torch.rand(batch, 450, generator=gen) * 2 - 1) * 5.0
        action, onnx_state = sess.run(["action", "state_out"], {"obs": obs.numpy(), "state_in": onnx_state})
        with torch.no_grad():
            ref_action, state = reference_actor(sd, obs, state)
        _record("catcher_actor (recurrent) action", _max_abs(action, ref_action))
        _record("catcher_actor (recurrent) state", _max_abs(onnx_state, state))


def test_cli_prints_what_it_wrote(originals, tmp_path, capsys):
    p = originals["paths"]
    code = cli_main(["export", "--thrower", str(p["actor_agent0"]), "--catcher", str(p["actor_agent1"]),
                     "--goal", str(p["model"]), "--out", str(tmp_path / "b")])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("thrower_actor.onnx", "catcher_actor.onnx", "goal_estimator.onnx", MANIFEST_NAME):
        assert str(tmp_path / "b" / name) in printed
    assert "property_estimator" not in printed
    assert sorted(load_manifest(tmp_path / "b").networks) == ["catcher_actor", "goal_estimator", "thrower_actor"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_contents(api_bundle, cli_bundle, originals):
    m = load_manifest(api_bundle)
    assert m.contract_version == CONTRACT_VERSION
    assert m.algorithm == "mappo"
    assert list(m.networks) == ["thrower_actor", "catcher_actor", "goal_estimator", "property_estimator"]
    shapes = {role: ([t.shape for t in n.inputs], [t.shape for t in n.outputs]) for role, n in m.networks.items()}
    assert shapes == {
        "thrower_actor": ([("batch", 450)], [("batch", 22)]),
        "catcher_actor": ([("batch", 450)], [("batch", 22)]),
        "goal_estimator": ([("batch", 60)], [("batch", 3)]),
        "property_estimator": ([("batch", 940)], [("batch", 1)]),
    }
    assert [m.networks[r].main_input.name for r in m.networks] == ["obs", "obs", "history", "window"]
    assert [m.networks[r].main_output.name for r in m.networks] == ["action", "action", "goal", "properties"]
    assert m.networks["property_estimator"].output_labels == ("mass",)
    assert all(m.networks[r].state is None for r in m.networks)
    assert m.networks["thrower_actor"].info == {
        "architecture": "mappo_actor", "obs_dim": 450, "act_dim": 22, "hidden": 512, "layer_N": 2,
        "recurrent_N": 0, "activation": "elu",
    }
    assert m.networks["property_estimator"].info["step_size"] == 47
    assert m.networks["property_estimator"].info["with_torques"] is False
    assert m.networks["goal_estimator"].info["hidden_sizes"] == [512, 256, 128]

    prov = m.provenance
    names = {"thrower_actor": "actor_agent0", "catcher_actor": "actor_agent1", "goal_estimator": "model",
             "property_estimator": "property"}
    for role, name in names.items():
        src = prov["sources"][role]
        assert Path(src["path"]) == originals["paths"][name].resolve()
        assert src["sha256"] == _sha256(originals["paths"][name])
        assert prov["files"][m.networks[role].file] == _sha256(api_bundle / m.networks[role].file)
        assert prov["check"]["max_abs_diff"][role] <= TOL
    assert prov["tools"]["torch"] == torch.__version__ and prov["tools"]["onnxruntime"] == ort.__version__
    assert {"onnx", "python"} <= set(prov["tools"]) and prov["opset"] == 17
    assert prov["handover_version"] and prov["created_utc"].endswith("+00:00")
    assert not list(api_bundle.glob(".export-*"))  # the temporary folder is gone

    rec = load_manifest(cli_bundle[0]).networks["catcher_actor"]
    assert rec.state is not None and (rec.state.input, rec.state.output) == ("state_in", "state_out")
    assert rec.state.shape == ("batch", 1, 512)
    assert [t.name for t in rec.inputs] == ["obs", "state_in"] and [t.name for t in rec.outputs] == ["action", "state_out"]
    assert rec.info["recurrent_N"] == 1 and rec.info["layer_N"] == 2


def _broken(sd: dict, kind: str) -> tuple[dict, str, str]:
    """A copy of ``sd`` with one defect; returns it, the key the error must name and a shape it must name."""
    sd = dict(sd)
    if kind == "missing":
        del sd["base.mlp.fc2.1.2.weight"]
        return sd, "base.mlp.fc2.1.2.weight", "expected shape (512,), found none"
    if kind == "misshaped":
        sd["base.feature_norm.bias"] = torch.zeros(451)
        return sd, "base.feature_norm.bias", "expected shape (450,), found shape (451,)"
    sd["base.mlp.fc3.weight"] = torch.zeros(4, 4)
    return sd, "base.mlp.fc3.weight", "expected none, found shape (4, 4)"


@pytest.mark.parametrize("kind", ["missing", "misshaped", "unknown"])
def test_bad_actor_checkpoint_names_key_and_file(originals, api_bundle, tmp_path, kind):
    sd, key, shapes = _broken(originals["sd"]["actor_agent1"], kind)
    bad = tmp_path / "actor_agent1.pt"
    torch.save(sd, bad)
    before = (api_bundle / MANIFEST_NAME).read_text()
    p = originals["paths"]
    with pytest.raises(InputError) as err:
        export_bundle(api_bundle, p["actor_agent0"], bad, p["model"])
    msg = str(err.value)
    assert str(bad) in msg and repr(key) in msg and shapes in msg, msg
    assert (api_bundle / MANIFEST_NAME).read_text() == before  # a failed export leaves the bundle alone


def test_bad_checkpoint_via_cli_is_one_line_exit_2(originals, tmp_path, capsys):
    p = originals["paths"]
    code = cli_main(["export", "--thrower", str(p["actor_agent0"]), "--catcher", str(tmp_path / "nope.pt"),
                     "--goal", str(p["model"]), "--out", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err and "not found" in err and len(err.strip().splitlines()) == 1


def test_upstream_log_std_layouts_wrappers_and_ignored_keys(originals, tmp_path):
    sd = originals["sd"]["actor_agent0"]
    log_std = sd["act.action_out.log_std"]
    plain = {k: v for k, v in sd.items() if k != "act.action_out.log_std"}
    fc_h = {f"base.mlp.fc_h.{n}": v for n, v in make_actor().base.mlp.fc2[0].state_dict().items()}
    variants = {
        "logstd_bias": {**plain, "act.action_out.logstd._bias": log_std[:, None]},
        "logstd": {**plain, "act.action_out.logstd": log_std, **fc_h},
        "wrapped_state_dict": {"state_dict": sd, "epoch": 3},
        "wrapped_model": {"model": sd},
    }
    x = torch.randn(8, 450)
    want = reference_actor(sd, x)
    for name, obj in variants.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        actor, info = actor_from_state_dict(load_checkpoint(path), str(path))
        torch.testing.assert_close(actor.act.action_out.log_std.detach(), log_std)
        with torch.no_grad():
            torch.testing.assert_close(actor(x), want, rtol=0, atol=TOL)
    with pytest.raises(InputError, match=r"'act.action_out.logstd._bias': expected shape \(22, 1\), found shape \(22,\)"):
        actor_from_state_dict({**plain, "act.action_out.logstd._bias": log_std}, "fork.pt")
    with pytest.raises(InputError, match=r"'act.action_out.logstd': expected none, found shape \(22,\)"):
        actor_from_state_dict({**sd, "act.action_out.logstd": log_std}, "both.pt")  # two log-stds: ambiguous


def test_other_input_errors(originals, tmp_path):
    with pytest.raises(InputError, match=r"missing\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"junk\.pt: cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    prop = {k: v for k, v in originals["sd"]["property"].items()}
    prop["linear1.weight"] = torch.zeros(512, 900)
    with pytest.raises(InputError, match=r"prop\.pt: .*'linear1.weight'.*940.*1820.*found shape \(512, 900\)"):
        property_estimator_from_state_dict(prop, "prop.pt")
    # A loadable actor that does not fit the contract (451 inputs) is refused by the export.
    small = tmp_path / "small.pt"
    torch.save(make_actor(obs_dim=451, hidden=16, layer_N=1).state_dict(), small)
    p = originals["paths"]
    with pytest.raises(InputError, match=r"small\.pt: thrower_actor takes 451 inputs"):
        export_bundle(tmp_path / "b", small, p["actor_agent1"], p["model"])
    with pytest.raises(InputError, match=r"property\.pt: property estimator gives 1 outputs, 2 labels"):
        export_bundle(tmp_path / "b", p["actor_agent0"], p["actor_agent1"], p["model"], p["property"], ("mass", "friction"))


def test_cli_without_torch_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes ``import torch`` raise ImportError
    code = cli_main(["export", "--thrower", "a.pt", "--catcher", "b.pt", "--goal", "c.pt", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "pip install 'handover[export]'" in err and "torch==2.13.0" in err


