"""``handover eval``: the report's numbers, files and operator errors, with random-weight bundles
(so successes are ~0; the success rule itself is tested in test_success.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handover.cli import main
from handover.runtime.errors import InputError
from handover.sim_twin.evaluate import (
    evaluate,
    factor_key,
    format_table,
    parse_mass_factors,
    write_json,
    write_plot,
)

REQUIRED_KEYS = {"success_rate", "episodes", "by_mass_factor", "mass_mre"}
CONSTANT_MASS = 0.8  # what the constant property estimator below always answers


@pytest.fixture(scope="module")
def constant_mass_bundle(checkpoints, tmp_path_factory) -> Path:
    """The random actors with a property estimator whose 'mass' output is always CONSTANT_MASS
    (zero output weights, bias CONSTANT_MASS): its errors are known for every true factor."""
    torch = pytest.importorskip("torch")
    from handover.runtime.benchmark import random_estimator_state_dict
    from handover.runtime.export import export_bundle

    folder = tmp_path_factory.mktemp("constant_mass")
    sd = random_estimator_state_dict(940, 1)
    sd["output_layer.weight"] = torch.zeros_like(sd["output_layer.weight"])
    sd["output_layer.bias"] = torch.full_like(sd["output_layer.bias"], CONSTANT_MASS)
    torch.save(sd, folder / "property.pt")
    export_bundle(folder / "bundle", checkpoints["actor_agent0"], checkpoints["actor_agent1"], checkpoints["model"],
                  property=folder / "property.pt", property_labels=("mass",))
    return folder / "bundle"


@pytest.fixture(scope="module")
def report(bundle_dir):
    return evaluate(bundle_dir, (0.6, 1.0), episodes=2, seed=5, steps=8, progress=False)


def test_factor_keys_have_at_least_one_decimal():
    assert [factor_key(f) for f in (1, 1.0, 0.6, 2.2, 0.25, 10)] == ["1.0", "1.0", "0.6", "2.2", "0.25", "10.0"]


def test_parse_mass_factors():
    assert parse_mass_factors("0.2, 0.6,1,2.2") == (0.2, 0.6, 1.0, 2.2)
    for bad, named in [("0.6,abc", "'abc'"), ("-1", "-1"), ("0", "0"), ("1,1.0", "1.0"), ("", "''"), ("nan", "nan")]:
        with pytest.raises(InputError, match="--mass-factors") as exc:
            parse_mass_factors(bad)
        assert named in str(exc.value)


def test_json_has_the_required_keys_and_consistent_counts(report, tmp_path):
    data = json.loads(write_json(report, tmp_path / "eval.json").read_text())
    assert REQUIRED_KEYS <= data.keys()
    assert data["episodes"] == 4
    assert list(data["by_mass_factor"]) == ["0.6", "1.0"]
    for entry in data["by_mass_factor"].values():
        assert set(entry) == {"successes", "episodes"}
        assert entry["episodes"] == 2 and 0 <= entry["successes"] <= 2
    total = sum(e["successes"] for e in data["by_mass_factor"].values())
    assert data["success_rate"] == pytest.approx(total / 4)
    assert set(data["mass_mre"]) == {"0.6", "1.0"}  # the fixture bundle has a mass estimator
    assert all(isinstance(v, float) and v >= 0 for v in data["mass_mre"].values())
    assert len(data["results"]) == 4
    assert data["seed"] == 5 and data["steps_per_episode"] == 8
    for key, outcomes in data["outcomes_by_mass_factor"].items():
        assert sum(outcomes.values()) == 2, key


def test_plot_is_a_valid_png(report, tmp_path):
    from PIL import Image

    path = write_plot(report, tmp_path / "sub" / "eval.png")
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300


def test_table_has_a_row_per_factor_and_a_summary(report):
    table = format_table(report)
    rows = [line.split() for line in table.splitlines()]
    assert [r[0] for r in rows if r and r[0] in ("0.6", "1.0")] == ["0.6", "1.0"]
    assert any(r[:2] == ["0.6", f"{report.by_factor()['0.6'].successes}/2"] for r in rows)
    assert table.splitlines()[-1].startswith("overall: ")


def test_mass_error_is_against_the_true_factor(constant_mass_bundle):
    rep = evaluate(constant_mass_bundle, (0.5, 2.0), episodes=1, steps=3, progress=False)
    assert [r.mass_estimate for r in rep.results] == pytest.approx([CONSTANT_MASS] * 2, abs=1e-5)
    # |0.8 - 0.5| / 0.5 = 0.6 and |0.8 - 2.0| / 2.0 = 0.6
    assert rep.mass_mre == pytest.approx({"0.5": 0.6, "2.0": 0.6}, abs=1e-5)
    assert rep.to_json_dict()["mass_estimate_mean"] == pytest.approx({"0.5": CONSTANT_MASS, "2.0": CONSTANT_MASS}, abs=1e-5)


def test_no_property_estimator_gives_an_empty_mass_mre(recurrent_bundle_dir):
    rep = evaluate(recurrent_bundle_dir, (1.0,), episodes=1, steps=3, progress=False)
    data = rep.to_json_dict()
    assert data["mass_mre"] == {} and data["episodes"] == 1
    assert "no mass estimate" in format_table(rep)


def test_same_seed_same_report(bundle_dir, report):
    again = evaluate(bundle_dir, (0.6, 1.0), episodes=2, seed=5, steps=8, progress=False)
    strip = lambda rep: [{k: v for k, v in r.__dict__.items() if k != "wall_s"} for r in rep.results]  # noqa: E731
    assert strip(again) == strip(report)


def test_eval_command_writes_json_plot_and_table(bundle_dir, tmp_path, capsys):
    out = tmp_path / "run" / "eval.json"
    code = main(["eval", "--bundle", str(bundle_dir), "--episodes", "1", "--steps", "3", "--mass-factors", "0.6,1",
                 "--json", str(out), "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["episodes"] == 2 and list(data["by_mass_factor"]) == ["0.6", "1.0"]
    assert out.with_suffix(".png").is_file()
    stdout = capsys.readouterr().out
    assert "overall:" in stdout and "mass MRE" in stdout


@pytest.mark.parametrize("value, named", [("0.6,abc", "'abc'"), ("-1", "-1"), ("0.5,0", "0")])
def test_bad_mass_factors_exit_2_naming_the_value(bundle_dir, tmp_path, capsys, value, named):
    code = main(["eval", "--bundle", str(bundle_dir), "--episodes", "1", "--mass-factors", value,
                 "--json", str(tmp_path / "e.json"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--mass-factors" in err and named in err
    assert not (tmp_path / "e.json").exists()


def test_bad_episode_count_and_missing_bundle_exit_2(bundle_dir, tmp_path, capsys):
    assert main(["eval", "--bundle", str(bundle_dir), "--episodes", "0", "--json", str(tmp_path / "e.json")]) == 2
    assert "--episodes" in capsys.readouterr().err
    assert main(["eval", "--bundle", str(tmp_path / "nope"), "--episodes", "1", "--json", str(tmp_path / "e.json"),
                 "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_property_estimator_with_joint_efforts_gets_them_in_an_episode(checkpoints, tmp_path):
    """Generalizable Dynamic Handover's estimator with the torque input (20 x (3 + 44 + 44) = 1820
    numbers): one protocol episode through `handover eval`'s path runs, and its window holds the 44
    measured efforts (the twin's actuator forces, N m) of every policy step: not zeros."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from handover.runtime.benchmark import random_estimator_state_dict
    from handover.runtime.export import export_bundle
    from handover.runtime.policy_step import PolicyStep

    torch.save(random_estimator_state_dict(1820, 1), tmp_path / "property.pt")
    export_bundle(tmp_path / "bundle", checkpoints["actor_agent0"], checkpoints["actor_agent1"], checkpoints["model"],
                  property=tmp_path / "property.pt", property_labels=("mass",))
    windows = []
    original = PolicyStep.step

    def spy(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        windows.append(self.window.buffer.copy())
        return result

    PolicyStep.step = spy
    try:
        report = evaluate(tmp_path / "bundle", episodes=1, steps=3, progress=False)
    finally:
        PolicyStep.step = original
    assert report.episodes == 1 and report.results[0].mass_estimate is not None
    last = windows[-1]  # (20, 91): object (3), positions (44), efforts (44); the newest row last
    assert last.shape == (20, 91)
    efforts = last[-1, 47:]
    assert np.isfinite(efforts).all() and np.abs(efforts).max() > 0.01  # real forces, not a zero fill
