"""The shipped reference bundle: it loads, its manifest says how it was made, and it runs through
the ONNX runtime in the strict twin. It was trained in the earlier, easier twin and catches nothing
in the strict one (README): the catch test is an expected failure until it is retrained."""

import pytest

from handover.runtime.bundle import load_manifest
from handover.runtime.cell_config import load_cell_config
from handover.sim_twin.evaluate import evaluate

CFG = load_cell_config()
BUNDLE = CFG.models.bundle


def test_the_default_config_names_the_shipped_bundle():
    assert BUNDLE is not None and BUNDLE.name == "reference_bundle"
    manifest = load_manifest(BUNDLE)
    assert set(manifest.networks) == {"thrower_actor", "catcher_actor", "goal_estimator", "property_estimator"}
    assert manifest.networks["property_estimator"].output_labels == ("mass",)
    assert sum(p.stat().st_size for p in BUNDLE.iterdir()) < 8e6  # small enough to ship in the repository


def test_manifest_records_data_seeds_losses_and_the_evaluation():
    prov = load_manifest(BUNDLE).provenance
    data = prov["training"]["data"]
    assert data["episodes"] == data["expert_episodes"] + data["dagger_episodes"] > 0
    assert {"seed", "expert"} <= set(data["seeds"])
    assert set(prov["training"]["losses"]) == {"goal_estimator", "thrower_actor", "catcher_actor", "property_estimator"}
    nominal, sweep = prov["evaluation"]["nominal"], prov["evaluation"]["sweep"]
    assert nominal["episodes"] == 100 and nominal["success_rate"] >= 0.8
    assert set(sweep["by_mass_factor"]) == {f"{0.2 * k:.1f}" for k in range(1, 12)}


def test_the_shipped_bundle_runs_the_protocol_through_the_onnx_runtime():
    report = evaluate(BUNDLE, (1.0,), episodes=2, seed=11, cfg=CFG, steps=5, progress=False)
    assert report.episodes == 2 and all(r.mass_estimate is not None for r in report.results)
    assert set(report.results[0].speeds) == {"thrower/arm", "thrower/hand", "catcher/arm", "catcher/hand"}


@pytest.mark.xfail(strict=True, reason="trained in the earlier twin (60 Hz, no speed limits, Allegro slot order, no "
                   "catcher-hand quirk); it catches 0-1 of 100 in the strict twin until it is retrained")
def test_the_shipped_bundle_throws_and_catches_through_the_onnx_runtime():
    report = evaluate(BUNDLE, (0.6, 1.0, 1.4), episodes=4, seed=11, cfg=CFG, progress=False).to_json_dict()
    assert report["success_rate"] >= 0.75
    for factor, error in report["mass_mre"].items():
        assert error < 0.15, f"mass factor {factor}: estimate off by {error:.0%}"
