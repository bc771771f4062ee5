"""Training of the reference policy's networks: losses go down, normalization is folded into the
weights exactly, the checkpoints export to a bundle that the runtime loads, and the
``train-reference`` pipeline writes its provenance into the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handover.runtime.bundle import load_manifest  # noqa: E402
from handover.runtime.cell_config import load_cell_config  # noqa: E402
from handover.runtime.contract import ContractSpec, unscale  # noqa: E402
from handover.runtime.errors import InputError  # noqa: E402
from handover.runtime.export import export_bundle  # noqa: E402
from handover.runtime.networks import PropertyEstimator, TrajEstimator  # noqa: E402
from handover.runtime.policy_networks import PolicyNetworks  # noqa: E402
from handover.sim_twin import training as T  # noqa: E402
from handover.sim_twin import demonstrations as demo  # noqa: E402

CFG = load_cell_config()
SPEC = ContractSpec.from_config(CFG)
SMALL = T.ActorArch(hidden=64, layer_N=1)


class Scripted:
    """Test policy whose actions depend on the episode's progress, which the joints reveal."""

    def reset(self, params) -> None:
        pass

    def act(self, x) -> np.ndarray:
        lo, hi = SPEC.lower, SPEC.upper
        a = np.zeros(44)
        a[1], a[2] = 0.01, -0.01
        hand = unscale(np.clip(SPEC.default[6:22], lo[6:22], hi[6:22]), lo[6:22], hi[6:22])
        a[6:22] = np.clip(hand + 0.3 * np.sin(0.3 * x.step), -1, 1)
        a[23], a[24] = 0.5, -0.5
        a[28:44] = np.clip(hand + 0.2 * np.cos(0.3 * x.step), -1, 1)
        return a


@pytest.fixture(scope="module")
def dataset():
    return demo.record(CFG, Scripted(), demo.RecordConfig(episodes=4, seed=2), judge=lambda twin: False, progress=False)


def flights(n: int, seed: int = 0) -> demo.Samples:
    """Synthetic goal-estimator samples: 20-entry histories of ballistic flights (m, relative to the
    thrower base, 1/60 s apart) -> the point 10 steps after the last one."""
    rng = np.random.default_rng(seed)
    p0 = rng.uniform([-0.05, -0.5, 0.2], [0.05, -0.3, 0.3], (n, 3))
    v = rng.uniform([-0.2, -3.0, 0.5], [0.2, -2.0, 1.5], (n, 3))
    t = np.arange(30)[None, :, None] / 60.0
    path = p0[:, None] + v[:, None] * t + 0.5 * np.array([0, 0, -9.81]) * t**2
    return demo.Samples(path[:, :20].reshape(n, 60).astype(np.float32), path[:, -1].astype(np.float32), np.arange(n))


@pytest.fixture(scope="module")
def trained(dataset):
    fit = T.FitConfig(epochs=40, batch_size=16, lr=2e-3, val_fraction=0.25)
    g = flights(160)
    goal, goal_res = T.fit_goal_estimator(g.x, g.y, T.FitConfig(epochs=30, batch_size=32, lr=2e-3), g.groups)
    thrower_s, catcher_s = demo.actor_samples(dataset, demo.build_actor_inputs(dataset, SPEC, T.goal_fn(goal)))
    thrower, thrower_res = T.fit_actor(thrower_s.x, thrower_s.y, fit, SMALL, thrower_s.groups)
    catcher, catcher_res = T.fit_actor(catcher_s.x, catcher_s.y, T.FitConfig(epochs=3, batch_size=64), SMALL)
    p = demo.property_samples(dataset)
    prop, prop_res = T.fit_property_estimator(p.x, p.y, T.FitConfig(epochs=3, batch_size=64, val_fraction=0.25), p.groups)
    return {"goal": (goal, goal_res), "thrower": (thrower, thrower_res), "catcher": (catcher, catcher_res),
            "property": (prop, prop_res), "thrower_samples": thrower_s, "goal_samples": g, "property_samples": p}


def test_behaviour_cloning_lowers_the_loss(trained):
    actor, res = trained["thrower"]
    assert len(res.epoch_losses) == 40 and res.train_samples == 90 and res.val_samples == 30  # 3 + 1 episodes
    assert res.epoch_losses[-1] < 0.2 * res.epoch_losses[0]
    assert res.train_loss < 0.2 * res.epoch_losses[0] and res.val_loss is not None and res.seconds > 0
    assert actor.base.mlp.fc1[0].out_features == 64 and len(actor.base.mlp.fc2) == 1 and not actor.training
    s = trained["thrower_samples"]
    est = T.predict(actor, s.x)
    assert est.shape == (120, 22) and np.mean((est - s.y) ** 2) < 0.2 * res.epoch_losses[0]


def test_goal_estimator_regression_lowers_the_loss(trained):
    _, res = trained["goal"]
    assert res.epoch_losses[-1] < 0.2 * res.epoch_losses[0] and res.train_samples == 144 and res.val_samples == 16
    assert set(res.metrics) == {"train_rmse_m", "train_mean_dist_m", "val_rmse_m", "val_mean_dist_m"}
    assert res.metrics["train_rmse_m"] == pytest.approx(np.sqrt(res.train_loss), rel=1e-3)
    d = res.to_dict()
    assert json.loads(json.dumps(d)) == d  # goes into the manifest as is


def test_property_estimator_output_and_metrics(trained):
    net, res = trained["property"]
    p = trained["property_samples"]
    assert T.predict(net, p.x).shape == (120, 1)
    assert {"train_mre", "val_mre"} <= set(res.metrics)


def test_folded_normalization_equals_the_normalized_network():
    torch.manual_seed(0)
    net = PropertyEstimator()
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, (16, 940)).astype(np.float32)
    scale = rng.uniform(0.5, 20, 940)
    scale[:30] = 0.0  # constant features: ignored
    si = T.Standardization(rng.normal(0, 1, 940), scale)
    so = T.Standardization(np.array([1.0]), np.array([1 / 0.3]))
    with torch.no_grad():
        ref = net(torch.from_numpy(si.apply(x))).numpy() * 0.3 + 1.0
    T.fold_normalization(net, si, so)
    np.testing.assert_allclose(T.predict(net, x), ref, rtol=1e-4, atol=1e-4)
    x[:, :30] = 100.0  # an ignored feature changes nothing
    np.testing.assert_allclose(T.predict(net, x), ref, rtol=1e-4, atol=1e-4)
    T.unfold_normalization(net, si, so)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(si.apply(x))).numpy() * 0.3 + 1.0, ref, rtol=1e-4, atol=1e-4)


def test_warm_start_continues_from_the_same_function(trained):
    goal, _ = trained["goal"]
    g = trained["goal_samples"]
    again, _ = T.fit_goal_estimator(g.x, g.y, T.FitConfig(epochs=1, batch_size=64, lr=1e-12), g.groups, init=goal)
    assert again is not goal
    np.testing.assert_allclose(T.predict(again, g.x), T.predict(goal, g.x), atol=1e-4)


def test_bad_training_data_is_refused():
    with pytest.raises(InputError, match=r"actor: inputs have shape \(5, 449\), expected \(N, 450\)"):
        T.fit_actor(np.zeros((5, 449)), np.zeros((5, 22)))
    with pytest.raises(InputError, match="goal estimator: targets have a non-finite value at index \\[1, 2\\]"):
        y = np.zeros((4, 3))
        y[1, 2] = np.inf
        T.fit_estimator(TrajEstimator(), np.zeros((4, 60)), y, T.FitConfig(epochs=1), name="goal estimator")


def test_split_holds_out_whole_groups():
    groups = np.repeat(np.arange(10), 5)
    tr, va = T.split_groups(groups, 0.2, seed=1)
    assert len(va) == 10 and not set(groups[tr]) & set(groups[va])
    assert len(T.split_groups(np.zeros(7, int), 0.5, 0)[1]) == 0  # one group: nothing to hold out


def test_checkpoints_export_and_load_in_the_runtime(trained, tmp_path):
    paths = {}
    for role in ("thrower", "catcher", "goal", "property"):
        paths[role] = tmp_path / f"{role}.pt"
        T.save_state_dict(trained[role][0], paths[role])
    out = tmp_path / "bundle"
    manifest = export_bundle(out, paths["thrower"], paths["catcher"], paths["goal"], paths["property"], property_labels=("mass",))
    assert manifest.networks["thrower_actor"].info["hidden"] == 64
    assert manifest.networks["property_estimator"].output_labels == ("mass",)
    nets = PolicyNetworks.load(out, warmup=1)
    g, s, p = trained["goal_samples"], trained["thrower_samples"], trained["property_samples"]
    np.testing.assert_allclose(nets.goal_estimator.run(g.x[7]), T.predict(trained["goal"][0], g.x[7:8])[0], atol=1e-5)
    action, props = nets.actors.run(s.x[7], s.x[7], p.x[7])
    np.testing.assert_allclose(action[:22], T.predict(trained["thrower"][0], s.x[7:8])[0], atol=1e-5)
    np.testing.assert_allclose(props, T.predict(trained["property"][0], p.x[7:8])[0], atol=1e-4)


def test_train_reference_pipeline_writes_the_provenance(tmp_path, monkeypatch):
    """A tiny end-to-end run: expert -> networks -> bundle -> evaluation -> manifest. The first export
    check fails on the property estimator: it is refit with 10x the weight decay and exported again."""
    from handover.runtime import export
    from handover.sim_twin.train_reference import TrainReferenceConfig, run_pipeline, summary

    real_export, calls = export.export_bundle, []

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise export.ExportCheckError("x/property_estimator.onnx: onnxruntime and torch differ by up to 2e-05 on property_estimator")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export, "export_bundle", failing_once)

    quick = T.FitConfig(epochs=2, batch_size=64)
    tc = TrainReferenceConfig(episodes=3, dagger_rounds=1, dagger_episodes=2, eval_episodes=1, sweep_episodes=1, sweep_mass_factors=(1.0,),
                              arch=T.ActorArch(hidden=32, layer_N=1), actor_fit=quick, actor_refit=quick, goal_fit=quick,
                              goal_refit=quick, property_fit=T.FitConfig(epochs=2, batch_size=64, weight_decay=1e-5))
    out, work = tmp_path / "bundle", tmp_path / "work"
    provenance, table = run_pipeline(CFG, tc, out, work, progress=False)
    manifest = load_manifest(out)
    assert manifest.provenance == provenance and "sources" in provenance  # the export's provenance is kept
    tr = provenance["training"]
    assert tr["data"]["episodes"] == 5 and tr["data"]["expert_episodes"] == 3 and tr["data"]["dagger_episodes"] == 2
    assert tr["data"]["samples"]["thrower_actor"] == 150 and tr["data"]["steps"] == 150
    assert set(tr["losses"]) == {"goal_estimator", "thrower_actor", "catcher_actor", "property_estimator"}
    assert len(tr["fits"]["thrower_actor"]) == 2  # initial fit + one DAgger round
    assert {"record", "goal", "actors", "dagger_record", "dagger_fit", "property", "export", "eval"} == set(tr["seconds"])
    assert tr["hyperparameters"]["arch"] == {"hidden": 32, "layer_N": 1}
    assert demo.load(tr["data"]["dataset"]).episodes == 5
    assert not list(out.glob("*.npz")) and not list(out.glob("*.pt"))  # data and checkpoints stay in the work folder
    assert provenance["evaluation"]["nominal"]["episodes"] == 1 and "success_rate" in provenance["evaluation"]["sweep"]
    assert len(calls) == 2 and len(tr["notes"]) == 1 and "weight_decay 0.0001" in tr["notes"][0]
    assert [f["weight_decay"] for f in tr["fits"]["property_estimator"]] == [1e-5, pytest.approx(1e-4)]
    text = "\n".join(summary(provenance, out, table))
    assert "final losses" in text and "note: export check failed" in text and "mass factor" in text
