"""The episode protocol (:mod:`handover.runtime.episode_sequencer`): phases, tick counts, the blend,
the dry step, the placement handshake, refusals, abort and stop; and one protocol episode in the
MuJoCo twin through the device interfaces (:func:`handover.sim_twin.episode.run_protocol_episode`).

The sequencer is pure, so the unit tests drive it with a fake controller (a test double for the
controller only) and deadlines ``t = k * period`` as the node's paced loop gives them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from handover.drivers.object_tracker import ObjectObservation
from handover.runtime.episode_sequencer import ACTIVE_PHASES, EpisodeSequencer, Phase, SequencerTick, min_jerk

PERIOD = 0.05  # s (20 Hz)
BLEND = 1.0  # s
SETTLE = 0.5  # s
STEPS = 30
OBS = ObjectObservation(stamp=0.0, valid=True, position=np.array([0.0, -0.1, 0.5]))
Q0 = np.linspace(-0.5, 0.5, 44)  # measured at the start, rad
RESET = np.linspace(0.3, -0.2, 44)  # the fake controller's reset targets, rad

# Tick counts at 20 Hz, blend 1.0 s, settle 0.5 s, 30 steps, worked out by hand (tick k at t = k * 0.05 s,
# the start accepted at tick 0, t = 0):
# - BLEND: s = min_jerk(t / 1.0) reaches 1 at t = 1.0 (tick 20), so ticks 0..20 = 21 ticks; tick 20
#   commands the reset targets, asks for the placement and enters PLACE with t0 = 1.0 + 0.05 = 1.05.
# - PLACE: ends on the first tick with t - 1.05 >= 0.5 (placement acknowledged at once): t = 1.55, tick 31;
#   ticks 21..31 = 11 ticks (tick 31 enters WARMUP).
# - WARMUP: tick 32 only (the dry step; enters EPISODE).
# - EPISODE: policy steps 0..29 on ticks 33..62 (first step at t = 1.65 s), and tick 63 (t = 3.15 s)
#   holds the last targets and reports done: 31 ticks. Then IDLE.
# Total 21 + 11 + 1 + 31 = 64 ticks.
EXPECTED_COUNTS = {Phase.BLEND: 21, Phase.PLACE: 11, Phase.WARMUP: 1, Phase.EPISODE: 31}


@dataclass
class _Result:
    predicted_goal_world: np.ndarray


class FakeController:
    """Records every call; its targets depend on its own step counter (its "recurrent state")."""

    def __init__(self, name: str, reset_targets: np.ndarray = RESET):
        self.name = name
        self.reset_targets = np.asarray(reset_targets, dtype=float)
        self.calls: list[tuple] = []
        self.n = 0  # steps since the last reset
        self.last_result: Optional[_Result] = None

    def reset(self) -> np.ndarray:
        self.calls.append(("reset",))
        self.n = 0
        self.last_result = None
        return self.reset_targets.copy()

    def targets(self, t, joint_positions, obs) -> np.ndarray:
        self.calls.append(("targets", t, self.n))
        out = self.reset_targets + 0.01 * (self.n + 1)
        self.n += 1
        self.last_result = _Result(np.array([0.0, -0.8, 0.3 + self.n]))
        return out


class EffortController(FakeController):
    """The extended controller signature: ``targets(t, q, obs, efforts=None)``."""

    def targets(self, t, joint_positions, obs, efforts=None) -> np.ndarray:
        self.calls.append(("efforts", None if efforts is None else np.array(efforts)))
        return super().targets(t, joint_positions, obs)


def make(**kw) -> tuple[EpisodeSequencer, FakeController, FakeController]:
    ctrl, dry = kw.pop("controller", FakeController("episode")), kw.pop("dry", FakeController("dry"))
    args = dict(period_s=PERIOD, episode_steps=STEPS, blend_s=BLEND, settle_s=SETTLE)
    args.update(kw)
    return EpisodeSequencer(ctrl, dry, **args), ctrl, dry


def run(seq: EpisodeSequencer, first_tick: int = 0, max_ticks: int = 200, ack: bool = True,
        efforts=None) -> list[tuple[int, SequencerTick, Phase]]:
    """Tick at t = k * PERIOD from ``first_tick`` until done: (k, output, phase after the tick)."""
    out = []
    for k in range(first_tick, first_tick + max_ticks):
        tick = seq.tick(k * PERIOD, Q0, OBS, efforts)
        if tick.request_place and ack:
            seq.placed(True)
        out.append((k, tick, seq.phase))
        if tick.done:
            return out
    raise AssertionError(f"no done within {max_ticks} ticks (phase {seq.phase})")


def test_phases_and_tick_counts_at_20_hz():
    seq, ctrl, _ = make()
    assert seq.start(0.0, Q0)[0]
    ticks = run(seq)
    assert Counter(t.phase for _, t, _ in ticks) == EXPECTED_COUNTS
    by_phase = {p: [k for k, t, _ in ticks if t.phase is p] for p in EXPECTED_COUNTS}
    assert by_phase[Phase.BLEND] == list(range(0, 21))
    assert by_phase[Phase.PLACE] == list(range(21, 32))
    assert by_phase[Phase.WARMUP] == [32]
    assert by_phase[Phase.EPISODE] == list(range(33, 64))
    # policy steps 0..29 on ticks 33..62, each with the controller's result; done on tick 63 only
    steps = [(k, t.step) for k, t, _ in ticks if t.step is not None]
    assert steps == [(33 + i, i) for i in range(STEPS)]
    goals = [t.result.predicted_goal_world[2] for _, t, _ in ticks if t.step is not None]
    assert goals == [0.3 + i + 1 for i in range(STEPS)]  # each step's own result
    assert all(t.result is None for _, t, _ in ticks if t.step is None)
    assert [k for k, t, _ in ticks if t.done] == [63]
    assert [k for k, t, _ in ticks if t.request_place] == [20]
    # every tick of an episode commands something; the phase after the tick:
    assert all(t.targets is not None and t.targets.shape == (44,) for _, t, _ in ticks)
    after = {k: p for k, _, p in ticks}
    assert after[20] is Phase.PLACE and after[31] is Phase.WARMUP and after[32] is Phase.EPISODE
    assert after[63] is Phase.IDLE and seq.step == STEPS
    # the first policy step at 1.65 s, done at 3.15 s
    assert [c[1] for c in ctrl.calls if c[0] == "targets"][0] == pytest.approx(1.65)


def test_the_blend_starts_where_the_joints_are_and_ends_at_the_reset_targets():
    seq, _, _ = make()
    assert seq.start(0.0, Q0)[0]
    blend = [t.targets for _, t, _ in run(seq) if t.phase is Phase.BLEND]
    assert np.array_equal(blend[0], Q0)  # no jump
    assert np.array_equal(blend[-1], RESET)
    for k, targets in enumerate(blend):  # the minimum-jerk profile over blend_s, on the tick's time
        np.testing.assert_allclose(targets, Q0 + (RESET - Q0) * min_jerk(k * PERIOD / BLEND), rtol=0, atol=1e-12)
    peak = np.abs(np.diff(blend, axis=0)).max() / PERIOD
    assert peak <= 1.875 * np.abs(RESET - Q0).max() / BLEND + 1e-9  # the profile's peak speed, rad/s
    # PLACE and WARMUP hold the reset targets
    seq2, _, _ = make()
    seq2.start(0.0, Q0)
    held = [t.targets for _, t, _ in run(seq2) if t.phase in (Phase.PLACE, Phase.WARMUP)]
    assert all(np.array_equal(h, RESET) for h in held)


def test_the_dry_step_runs_in_the_dry_controller_only():
    seq, ctrl, dry = make()
    seq.start(0.0, Q0)
    ticks = run(seq)
    warmup_tick = next(k for k, t, _ in ticks if t.phase is Phase.WARMUP)
    # the dry controller: reset, one step at the warm-up tick's time, nothing else
    assert dry.calls == [("reset",), ("targets", warmup_tick * PERIOD, 0)]
    # the episode controller: reset at the start and again at the warm-up, never stepped before the
    # episode; its first step starts from a fresh state (n == 0)
    targets_calls = [c for c in ctrl.calls if c[0] == "targets"]
    assert ctrl.calls[:2] == [("reset",), ("reset",)]
    assert [c[2] for c in targets_calls] == list(range(STEPS))
    first = next(t for _, t, _ in ticks if t.step == 0)
    assert np.array_equal(first.targets, RESET + 0.01)


def test_the_placement_is_requested_once_and_place_waits_for_its_answer():
    seq, _, _ = make()
    seq.start(0.0, Q0)
    ticks = [seq.tick(k * PERIOD, Q0, OBS) for k in range(80)]  # never acknowledged
    assert sum(t.request_place for t in ticks) == 1 and ticks[20].request_place
    assert seq.phase is Phase.PLACE  # 3 s later: settle_s long past, still waiting
    assert all(np.array_equal(t.targets, RESET) for t in ticks[21:])
    seq.placed(True, "placed")
    assert seq.tick(80 * PERIOD, Q0, OBS).phase is Phase.PLACE and seq.phase is Phase.WARMUP  # at once
    # a repeated or late answer changes nothing
    seq.placed(False, "late")
    assert seq.phase is Phase.WARMUP and seq.fault == ""


def test_an_acknowledgement_before_settle_waits_for_settle():
    seq, _, _ = make()
    seq.start(0.0, Q0)
    ticks = run(seq)  # acknowledged on the requesting tick (20): PLACE still lasts 11 ticks
    assert sum(t.phase is Phase.PLACE for _, t, _ in ticks) == 11


def test_a_failed_placement_aborts():
    seq, _, _ = make()
    seq.start(0.0, Q0)
    for k in range(21):
        seq.tick(k * PERIOD, Q0, OBS)
    seq.placed(False, "the twin is busy")
    assert seq.phase is Phase.FAULT
    assert seq.fault == "aborted in phase place: the object placement failed: the twin is busy"
    assert seq.tick(21 * PERIOD, Q0, OBS).targets is None


def test_a_start_while_running_is_refused_and_one_after_the_episode_accepted():
    seq, ctrl, _ = make()
    ok, why = seq.start(0.0, Q0)
    assert ok, why
    for k in range(25):  # into PLACE
        tick = seq.tick(k * PERIOD, Q0, OBS)
        if tick.request_place:
            seq.placed(True)
    resets = ctrl.calls.count(("reset",))
    ok, why = seq.start(25 * PERIOD, Q0 + 1.0)
    assert not ok and "running" in why and "place" in why, why
    assert seq.phase is Phase.PLACE and ctrl.calls.count(("reset",)) == resets  # nothing changed
    ticks = run(seq, first_tick=25)
    assert ticks[-1][1].done
    # after the episode: a new start is accepted and blends from the new measurement
    ok, why = seq.start(100.0, Q0 + 0.1)
    assert ok, why
    assert np.array_equal(seq.tick(100.0, Q0, OBS).targets, Q0 + 0.1)
    with pytest.raises(ValueError, match="shape"):
        make()[0].start(0.0, Q0[:22])


def test_after_an_episode_idle_holds_the_last_targets():
    seq, ctrl, _ = make()
    seq.start(0.0, Q0)
    ticks = run(seq)
    last_step, done = ticks[-2][1], ticks[-1][1]
    assert last_step.step == STEPS - 1 and np.array_equal(done.targets, last_step.targets)
    for k in range(64, 70):
        tick = seq.tick(k * PERIOD, None, OBS)  # IDLE needs no measurement
        assert tick.phase is Phase.IDLE and np.array_equal(tick.targets, last_step.targets)
    assert np.array_equal(seq.hold_targets, last_step.targets)
    assert len([c for c in ctrl.calls if c[0] == "targets"]) == STEPS  # no policy step after the episode


def test_abort_holds_until_the_next_start():
    seq, ctrl, _ = make()
    seq.start(0.0, Q0)
    for k in range(40):  # into EPISODE
        tick = seq.tick(k * PERIOD, Q0, OBS)
        if tick.request_place:
            seq.placed(True)
    assert seq.phase is Phase.EPISODE and seq.step == 7
    n_calls = len(ctrl.calls)
    seq.abort("joint states of catcher/hand are stale")
    assert seq.phase is Phase.FAULT and not seq.active
    assert seq.fault == "aborted in phase episode: joint states of catcher/hand are stale"
    for k in range(40, 60):  # latched: nothing commanded, no policy step, no hold
        tick = seq.tick(k * PERIOD, Q0, OBS)
        assert tick == SequencerTick(Phase.FAULT)
    assert seq.hold_targets is None and len(ctrl.calls) == n_calls
    seq.release()  # only a stop is released
    assert seq.phase is Phase.FAULT
    ok, _ = seq.start(3.0, Q0)  # a start clears the fault
    assert ok and seq.fault == "" and seq.phase is Phase.BLEND


def test_a_stop_silences_and_a_release_idles_without_a_hold():
    seq, _, _ = make()
    seq.start(0.0, Q0)
    run(seq)
    assert seq.hold_targets is not None
    seq.stop()
    assert seq.phase is Phase.ESTOPPED and seq.tick(5.0, Q0, OBS).targets is None
    ok, why = seq.start(5.0, Q0)
    assert not ok and "stop" in why
    seq.release()
    assert seq.phase is Phase.IDLE and seq.tick(5.05, Q0, OBS).targets is None  # nothing held after a stop
    seq.start(6.0, Q0)
    seq.stop(latched=False)  # a stop already released when the caller saw it
    assert seq.phase is Phase.IDLE and seq.tick(6.05, Q0, OBS).targets is None


def test_efforts_reach_the_controllers_only_when_given():
    seq, ctrl, dry = make()  # controllers without the efforts argument
    seq.start(0.0, Q0)
    run(seq)  # efforts None: called without the keyword
    e_ctrl, e_dry = EffortController("episode"), EffortController("dry")
    seq, _, _ = make(controller=e_ctrl, dry=e_dry)
    seq.start(0.0, Q0)
    efforts = np.linspace(-2.0, 2.0, 44)
    run(seq, efforts=efforts)
    given = [c[1] for c in e_ctrl.calls + e_dry.calls if c[0] == "efforts"]
    assert len(given) == STEPS + 1 and all(np.array_equal(g, efforts) for g in given)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="period_s"):
        make(period_s=0.0)
    with pytest.raises(ValueError, match="blend_s"):
        make(blend_s=0.0)
    with pytest.raises(ValueError, match="settle_s"):
        make(settle_s=-0.1)
    with pytest.raises(ValueError, match="episode_steps"):
        make(episode_steps=0)
    c = FakeController("both")
    with pytest.raises(ValueError, match="second controller"):
        EpisodeSequencer(c, c, period_s=PERIOD, episode_steps=STEPS)
    assert set(ACTIVE_PHASES) == {Phase.BLEND, Phase.PLACE, Phase.WARMUP, Phase.EPISODE}


# -- one protocol episode in the MuJoCo twin -------------------------------------------------------


def _twin():
    from handover.runtime.cell_config import load_cell_config
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.twin import Twin

    cfg = load_cell_config()
    twin = Twin(cfg)
    devices = TwinDevices.create(twin)
    devices.bring_up()
    return cfg, twin, devices


def test_a_protocol_episode_in_the_twin_holding_the_reset_pose():
    from handover.sim_twin.episode import HoldPose, run_protocol_episode

    cfg, twin, devices = _twin()
    period = cfg.control_period_s  # 0.05 s in the shipped config: 21, 11, 1, 31 ticks as above
    reset = twin.data.ctrl[twin.actuator_ids].copy()  # the reset pose's targets
    start = np.array(cfg.object.start_position)
    seq = EpisodeSequencer(HoldPose(reset), HoldPose(reset), period_s=cfg.control_period_s,
                           episode_steps=cfg.episode_steps, blend_s=BLEND, settle_s=SETTLE)
    calls = []

    def place_object():
        calls.append(twin.time)
        twin.set_object_state(start, np.zeros(3))
        return True, ""

    seen = []
    records = run_protocol_episode(devices, seq, place_object, on_tick=seen.append)
    assert seen == records
    counts = Counter(r.phase for r in records)
    assert counts == {Phase.BLEND: round(BLEND / period) + 1, Phase.PLACE: round(SETTLE / period) + 1,
                      Phase.WARMUP: 1, Phase.EPISODE: cfg.episode_steps + 1}
    assert [r.step for r in records if r.step is not None] == list(range(cfg.episode_steps))
    assert len(calls) == 1 and [r.tick for r in records if r.placed] == [round(BLEND / period)]
    assert records[-1].done and not any(r.done for r in records[:-1])
    assert seq.phase is Phase.IDLE
    assert records[-1].time == pytest.approx(len(records) * cfg.control_period_s)
    assert np.abs(records[0].targets - records[0].joint_positions).max() < 1e-9  # no jump
    final = twin.object_position()
    assert np.linalg.norm(final - start) < 0.02, (final, start)  # still in the hand (measured: 9 mm)


def test_a_protocol_episode_in_the_twin_passes_the_measured_efforts():
    from handover.sim_twin.episode import HoldPose, run_protocol_episode

    class EffortHold(HoldPose):
        def __init__(self, targets):
            super().__init__(targets)
            self.efforts = []

        def targets(self, t, joint_positions, obs, efforts=None):
            self.efforts.append(efforts)
            return super().targets(t, joint_positions, obs)

    cfg, twin, devices = _twin()
    reset = twin.data.ctrl[twin.actuator_ids].copy()
    ctrl = EffortHold(reset)
    seq = EpisodeSequencer(ctrl, EffortHold(reset), period_s=cfg.control_period_s, episode_steps=3,
                           blend_s=0.1, settle_s=0.0)
    records = run_protocol_episode(devices, seq, lambda: (True, ""), read_efforts=True)
    policy = [r for r in records if r.step is not None]
    assert len(policy) == 3 and len(ctrl.efforts) == 3
    for r, e in zip(policy, ctrl.efforts):
        assert e.shape == (44,) and np.isfinite(e).all() and np.array_equal(e, r.efforts)
    # the efforts are the actuator forces the twin reports, in contract order
    now_efforts = np.concatenate([devices.joint_groups[g].read(twin.time).effort for g in
                                  (("thrower", "arm"), ("thrower", "hand"), ("catcher", "arm"), ("catcher", "hand"))])
    np.testing.assert_array_equal(now_efforts, twin.read_joints(np.arange(44)).effort)
    with pytest.raises(RuntimeError, match="placement failed: no"):
        run_protocol_episode(devices, EpisodeSequencer(HoldPose(reset), HoldPose(reset), period_s=cfg.control_period_s,
                                                       episode_steps=3, blend_s=0.1), lambda: (False, "no"))
