"""Demonstrations: recording through the contract, the .npz dataset format and its checks, and the
replay invariant (inputs rebuilt from a dataset = the inputs the live ContractState produced)."""

from __future__ import annotations

import numpy as np
import pytest

from handover.runtime.cell_config import load_cell_config
from handover.runtime.contract import ContractSpec, unscale
from handover.runtime.contract_state import ContractState
from handover.runtime.errors import InputError
from handover.runtime.replay import replay
from handover.sim_twin import demonstrations as demo

CFG = load_cell_config()
SPEC = ContractSpec.from_config(CFG)
STEPS = 8


class HoldWithNoise:
    """Test policy: hold the default pose, small action noise (seeded per episode from the params)."""

    def __init__(self, noise: float = 0.05):
        self.noise = noise
        lo, hi = SPEC.lower, SPEC.upper
        self.hold = np.zeros(44)
        self.hold[6:22] = unscale(np.clip(SPEC.default[6:22], lo[6:22], hi[6:22]), lo[6:22], hi[6:22])
        self.hold[28:44] = unscale(np.clip(SPEC.default[28:44], lo[6:22], hi[6:22]), lo[6:22], hi[6:22])
        self.rng = np.random.default_rng(0)
        self.seen: list = []

    def reset(self, params) -> None:
        self.rng = np.random.default_rng(int(params.mass_factor * 1e6) if params is not None else 0)

    def act(self, x) -> np.ndarray:
        self.seen.append(x)
        return np.clip(self.hold + self.rng.normal(0.0, self.noise, 44), -1, 1)


def fake_goal(histories: np.ndarray) -> np.ndarray:
    """A row-wise stand-in for the goal estimator: (N, 60) -> (N, 3)."""
    h = np.asarray(histories, np.float32)
    return (0.5 * h[:, -3:] + h[:, :3] + np.float32([0.1, -0.6, 0.05])).astype(np.float32)


def placeholder_judge(twin) -> bool:
    """Test-only stand-in for handover.sim_twin.success.judge."""
    return bool(twin.object_position()[2] > 0.15)


@pytest.fixture(scope="module")
def recorded():
    """3 episodes of 8 steps in one run, with the live actor inputs kept."""
    live = []
    ds = demo.record(CFG, HoldWithNoise(), demo.RecordConfig(episodes=3, seed=7, steps=STEPS), predict_goal=fake_goal,
                     judge=placeholder_judge, progress=False, on_episode=lambda e, log: live.append(log))
    return ds, live


@pytest.fixture(scope="module")
def saved(recorded, tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demonstrations.npz"
    demo.save(recorded[0], path)
    return path


def test_dataset_round_trip_has_the_documented_arrays(saved, recorded):
    ds = demo.load(saved)
    assert ds.episodes == 3 and ds.steps == STEPS and ds.source == str(saved)
    assert set(ds.arrays) == set(demo.SCHEMA)
    for name, spec in demo.SCHEMA.items():
        a = ds[name]
        assert (a.dtype.kind == "U") if spec.dtype == "str" else (a.dtype == np.dtype(spec.dtype)), name
        assert a.shape == tuple({"E": 3, "T": STEPS}.get(d, d) for d in spec.shape), name
        np.testing.assert_array_equal(a, recorded[0][name])
    with np.load(saved) as f:
        assert str(f["format"]) == demo.DATASET_FORMAT == "handover-demonstrations/2"
    # the training randomization (the default): object factors in the training ranges, both hands'
    # scalar gains nominal, the thrower's per-joint randomization and the timing in params_json/timing
    params = [ds.params(e) for e in range(3)]
    assert all(p.thrower is not None and len(p.thrower.stiffness_scale) == 22 for p in params)
    assert [p.mass_factor for p in params] == ds["mass_factor"].tolist()
    assert ds["timing"].tolist() == ["jitter"] * 3
    assert np.all((ds["mass_factor"] >= 0.5) & (ds["mass_factor"] <= 1.5))
    assert np.all((ds["friction_factor"] >= 0.7) & (ds["friction_factor"] <= 1.3))
    assert np.all((ds["scale_factor"] >= 0.95) & (ds["scale_factor"] <= 1.05))
    assert np.all(ds["hand_stiffness_scale"] == 1.0) and np.all(ds["hand_damping_scale"] == 1.0)
    assert len(set(ds["seed"].tolist())) == 3 and np.all(ds["run"] == 0) and np.all(ds["round"] == 0)
    # the true goal is the object's final position; relative = minus the thrower base
    np.testing.assert_array_equal(ds["true_goal"], ds["object_true"][:, -1])
    np.testing.assert_allclose(ds["true_goal_rel"], ds["true_goal"] - SPEC.thrower_base, atol=1e-6)
    # the goal is drawn per episode in the configured box
    lo = np.float32(CFG.goal.center) - np.float32(CFG.goal.half_range) - 1e-6
    hi = np.float32(CFG.goal.center) + np.float32(CFG.goal.half_range) + 1e-6
    assert np.all((ds["goal_pos"] >= lo) & (ds["goal_pos"] <= hi)) and len(set(ds["goal_pos"][:, 1].tolist())) == 3
    # without a learner the executed actions are the expert's, clipped
    np.testing.assert_array_equal(ds["actions"], ds["expert_actions"])
    assert not ds["learner_acted"].any() and np.abs(ds["actions"]).max() <= 1.0


def test_recording_is_reproducible_from_its_seed(recorded):
    again = demo.record(CFG, HoldWithNoise(), demo.RecordConfig(episodes=3, seed=7, steps=STEPS), predict_goal=fake_goal,
                        judge=placeholder_judge, progress=False)
    for name in demo.SCHEMA:
        np.testing.assert_array_equal(again[name], recorded[0][name], err_msg=name)


def test_policy_sees_the_contract_state(recorded):
    """The expert's ActionInputs: step index, float32 joints, latest valid object, goal, prev targets."""
    policy = HoldWithNoise()
    ds = demo.record(CFG, policy, demo.RecordConfig(episodes=1, seed=3, steps=4), judge=placeholder_judge, progress=False)
    steps = [x.step for x in policy.seen]
    assert steps == [0, 1, 2, 3]
    first = policy.seen[0]
    assert isinstance(first, demo.ContractInputs) and first.twin is not None
    np.testing.assert_array_equal(first.targets, np.clip(SPEC.default, SPEC.lower, SPEC.upper))
    np.testing.assert_array_equal(policy.seen[2].targets, ds["targets"][0, 1])  # prev = last step's targets
    np.testing.assert_array_equal(first.joint_positions[:22], ds["thrower_q"][0, 0])
    np.testing.assert_array_equal(first.object_position, ds["object_pos"][0, 0])
    np.testing.assert_array_equal(first.predicted_goal, np.zeros(3, np.float32))  # no goal estimator yet
    np.testing.assert_allclose(ds["predicted_goal"][0], np.broadcast_to(SPEC.thrower_base, (4, 3)))


def corrupt(path, tmp_path, change) -> str:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    out = tmp_path / "bad.npz"
    np.savez(out, **arrays)
    return str(out)


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("catcher_q"), ["'catcher_q'", "missing"]),
    (lambda a: a.__setitem__("actions", a["actions"][:, :, :40]), ["'actions'", "shape (3, 8, 40)", "(E, T, 44)"]),
    (lambda a: a.__setitem__("mass_factor", a["mass_factor"][:2]), ["'mass_factor'", "shape (2,)", "E = 3"]),
    (lambda a: a["object_pos"].__setitem__((1, 2, 0), np.nan), ["'object_pos'", "non-finite", "[1, 2, 0]"]),
    (lambda a: a.__setitem__("thrower_q", a["thrower_q"].astype(np.float64)), ["'thrower_q'", "dtype float64"]),
    (lambda a: a.__setitem__("format", np.array("handover-demonstrations/0")), ["format", "handover-demonstrations/2"]),
    (lambda a: a.pop("format"), ["'format' missing"]),
    (lambda a: a.__setitem__("run", np.array([0, 1, 0], np.int32)), ["'run'", "recording order"]),
])
def test_a_corrupted_dataset_is_refused_naming_array_and_file(saved, tmp_path, change, words):
    bad = corrupt(saved, tmp_path, change)
    with pytest.raises(InputError) as err:
        demo.load(bad)
    msg = str(err.value)
    assert msg.startswith(bad)
    for w in words:
        assert w in msg


def test_unreadable_or_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        demo.load(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match=f"{junk}: demonstrations file is not an .npz archive"):
        demo.load(junk)


def test_rebuilt_inputs_equal_the_live_inputs(recorded, saved):
    """The replay invariant: same dataset, same predicted-goal function -> bit-identical inputs, including
    the frame stack carried over from the previous episode (the episodes are replayed in order)."""
    _, live = recorded
    ds = demo.load(saved)
    rebuilt = demo.build_actor_inputs(ds, SPEC, fake_goal)
    for e, log in enumerate(live):
        np.testing.assert_array_equal(rebuilt.thrower[e], log.thrower_input)
        np.testing.assert_array_equal(rebuilt.catcher[e], log.catcher_input)
        np.testing.assert_array_equal(rebuilt.predicted_goal_rel[e] + SPEC.thrower_base, ds["predicted_goal"][e])
    # the carried-over stack matters: episode 1 alone (fresh state) starts differently
    state = ContractState(SPEC)
    state.reset()
    state.push_object(ds["object_pos"][1, 0])
    fresh, _ = state.inputs(ds["thrower_q"][1, 0], ds["catcher_q"][1, 0], ds["goal_pos"][1], rebuilt.predicted_goal_rel[1, 0])
    assert not np.array_equal(fresh, live[1].thrower_input[0])


def test_an_episode_is_a_replay_log():
    """Episode 0 through `handover contract replay` gives the live thrower inputs and the logged
    targets. Replays add no noise, so this records without the training randomization's observation
    and action noise (the catcher's inputs still differ by the history noise: not compared)."""
    live = []
    ds = demo.record(CFG, HoldWithNoise(), demo.RecordConfig(episodes=1, seed=7, steps=STEPS, randomize="none"),
                     predict_goal=fake_goal, judge=placeholder_judge, progress=False,
                     on_episode=lambda e, log: live.append(log))
    out = replay(SPEC, ds.episode_log(0))
    np.testing.assert_array_equal(out["thrower_input"], live[0].thrower_input)
    np.testing.assert_array_equal(out["targets"], ds["targets"][0])


def test_a_dataset_from_another_cell_is_refused(saved):
    ds = demo.load(saved)
    arrays = dict(ds.arrays, targets=ds["targets"] + np.float32(0.01))
    with pytest.raises(InputError, match="'targets' at episode 0, step 0"):
        demo.build_actor_inputs(demo.Demonstrations(arrays, "x.npz"), SPEC, None)
    arrays = dict(ds.arrays, thrower_base=np.float32([0, 0, 0.3]))
    with pytest.raises(InputError, match="thrower_base"):
        demo.build_actor_inputs(demo.Demonstrations(arrays, "x.npz"), SPEC, None)


def test_goal_and_property_samples(saved):
    ds = demo.load(saved)
    n = 3 * STEPS
    g = demo.goal_samples(ds)
    assert g.x.shape == (n, 60) and g.y.shape == (n, 3) and g.groups.tolist() == np.repeat([0, 1, 2], STEPS).tolist()
    np.testing.assert_array_equal(g.y[STEPS], ds["true_goal_rel"][1])
    # history at step 0 of an episode: zeros except the newest entry
    np.testing.assert_array_equal(g.x[STEPS, :-3], 0)
    np.testing.assert_array_equal(g.x[STEPS, -3:], ds["object_pos"][1, 0] - ds["thrower_base"])
    p = demo.property_samples(ds)
    assert p.x.shape == (n, 940) and p.y.shape == (n, 1) and p.y.dtype == np.float32
    np.testing.assert_allclose(p.y[:, 0], np.repeat(ds["mass_factor"], STEPS).astype(np.float32))
    w = p.x[STEPS + 2].reshape(20, 47)  # episode 1, step 2: rows 17..19 filled, oldest first
    np.testing.assert_array_equal(w[:17], 0)
    for row, t in zip(w[17:], range(3)):
        np.testing.assert_array_equal(row, np.concatenate([ds["object_pos"][1, t] - ds["thrower_base"],
                                                           ds["thrower_q"][1, t], ds["catcher_q"][1, t]]))
    late = demo.property_samples(ds, first_step=STEPS - 2)  # only windows ending at the last two steps
    assert late.x.shape == (6, 940) and late.groups.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(late.x[2], p.x[2 * STEPS - 2])
    with pytest.raises(InputError, match="first_step"):
        demo.property_samples(ds, first_step=STEPS)


def test_concat_keeps_runs_apart(saved):
    ds = demo.load(saved)
    both = demo.concat([ds, ds])
    assert both.episodes == 6 and both["run"].tolist() == [0, 0, 0, 1, 1, 1]
    one = demo.build_actor_inputs(ds, SPEC, fake_goal)
    two = demo.build_actor_inputs(both, SPEC, fake_goal)
    np.testing.assert_array_equal(two.thrower[3:], one.thrower)  # the second run starts from a fresh state


def test_dagger_mixing_executes_the_learner_through_the_contract_path():
    """beta = 1: every executed action is the learner's, computed from the controller's ContractState;
    the expert still labels every step."""
    seen = []

    def thrower(x):
        seen.append(x.copy())
        return np.full((len(x), 22), 0.02, np.float32)

    learner = demo.LearnerPolicy(fake_goal, thrower, lambda x: np.full((len(x), 22), -0.03, np.float32))
    live = []
    ds = demo.record(CFG, HoldWithNoise(), demo.RecordConfig(episodes=2, seed=1, steps=5, beta=1.0, round=1), learner=learner,
                     judge=placeholder_judge, progress=False, on_episode=lambda e, log: live.append(log))
    assert ds["learner_acted"].all() and np.all(ds["round"] == 1) and np.all(ds["beta"] == 1.0)
    np.testing.assert_array_equal(ds["actions"][..., :22], np.float32(0.02))
    assert not np.array_equal(ds["actions"], ds["expert_actions"])
    np.testing.assert_array_equal(np.concatenate([log.thrower_input for log in live]), np.concatenate(seen))
    # the learner's goal estimator fed the contract; the rebuild with it gives the same inputs
    rebuilt = demo.build_actor_inputs(ds, SPEC, learner.predict_goal)
    np.testing.assert_array_equal(rebuilt.thrower.reshape(-1, 450), np.concatenate(seen))
    # beta = 0.5 mixes per step, reproducibly from the episode seeds
    mixed = demo.record(CFG, HoldWithNoise(), demo.RecordConfig(episodes=2, seed=1, steps=12, beta=0.5), learner=learner,
                        judge=placeholder_judge, progress=False)
    assert 0 < mixed["learner_acted"].mean() < 1
    np.testing.assert_array_equal(mixed["actions"][~mixed["learner_acted"]], mixed["expert_actions"][~mixed["learner_acted"]])


def test_learner_refuses_plain_action_inputs():
    from handover.sim_twin.expert import ActionInputs

    learner = demo.LearnerPolicy(fake_goal, lambda x: x[:, :22], lambda x: x[:, :22])
    x = ActionInputs(step=0, joint_positions=np.zeros(44), object_position=np.zeros(3), goal=np.zeros(3), targets=np.zeros(44))
    with pytest.raises(TypeError, match="ContractInputs"):
        learner.act(x)
