"""The twin's tools: rendering (skipped cleanly without OpenGL), the benchmark command, and a
policy bundle driving the twin through the devices."""

import numpy as np
import pytest

from handover.cli import main
from handover.runtime.cell_config import load_cell_config
from handover.runtime.contract import ContractSpec
from handover.runtime.policy_controller import PolicyController
from handover.runtime.policy_networks import PolicyNetworks
from handover.sim_twin.devices import GROUPS, TwinDevices
from handover.sim_twin.episode import run_episode
from handover.sim_twin.twin import Twin

CFG = load_cell_config()


def test_render_writes_frames_from_both_cameras(tmp_path, capsys):
    from handover.sim_twin.render import gl_available

    reason = gl_available()
    if reason:
        pytest.skip(reason)
    from PIL import Image

    assert main(["twin", "render", "--out", str(tmp_path), "--steps", "2", "--width", "160", "--height", "120"]) == 0
    for cam in ("d435", "overview"):
        frames = sorted(tmp_path.glob(f"{cam}_*.png"))
        assert len(frames) == 3
        img = np.asarray(Image.open(frames[-1]))
        assert img.shape == (120, 160, 3) and img.std() > 5  # a real picture, not a blank frame
    assert (tmp_path / "contact_sheet.png").is_file()


def test_twin_benchmark_command(capsys):
    assert main(["twin", "benchmark", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "real-time factor" in out and "object in hand" in out and "30-step episode" in out


def test_a_policy_bundle_drives_the_twin_through_the_devices(bundle_dir):
    twin = Twin(CFG)
    devices = TwinDevices.create(twin)
    devices.bring_up()
    controller = PolicyController(ContractSpec.from_config(CFG), PolicyNetworks.load(bundle_dir), CFG.goal.center,
                                  CFG.object.start_position)
    records = run_episode(devices, controller, 10)
    assert len(records) == 10 and records[-1].time == pytest.approx(10 * CFG.control_period_s)  # 0.5 s at 20 Hz
    lower, upper = np.array(CFG.thrower.lower + CFG.catcher.lower), np.array(CFG.thrower.upper + CFG.catcher.upper)
    for rec in records:
        assert np.all(rec.targets >= lower) and np.all(rec.targets <= upper)
    # the commands are the policy's targets, as the command gate lets them through (clamped to the
    # limits, each change at most velocity_limit x 50 ms)
    gates = [devices.joint_groups[g].last_gate for g in GROUPS]
    np.testing.assert_allclose(np.concatenate([d.requested for d in gates]), controller.last_result.targets, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([d.targets for d in gates]), records[-1].targets)
    max_step = np.array(CFG.velocity_limit) * CFG.control_period_s
    reference = np.concatenate([d.reference for d in gates])
    assert np.all(np.abs(records[-1].targets - reference) <= max_step + 1e-12)
    # observations reached the policy: the history holds tracker positions (relative to the thrower base)
    hist = controller.step_fn.state.history.entries
    assert np.abs(hist[-1] - (records[-1].observation.position - CFG.thrower.base_position)).max() < 1e-6


def test_real_time_clock_paces_an_episode_and_fast_clock_does_not():
    import time

    from handover.sim_twin.clock import FastClock, RealTimeClock
    from handover.sim_twin.episode import HoldPose

    twin = Twin(CFG)
    devices = TwinDevices.create(twin)
    devices.bring_up()
    hold = HoldPose(twin.data.ctrl[twin.actuator_ids].copy())
    clock = RealTimeClock()
    t0 = time.monotonic()
    run_episode(devices, hold, 10, clock=clock)
    paced = time.monotonic() - t0
    assert paced >= 10 * CFG.control_period_s - 1e-3  # 10 steps of 50 ms never finish before their deadlines
    assert clock.overruns <= 3  # a loaded CI machine may be late a few times; it is counted, not hidden
    twin.reset()
    t0 = time.monotonic()
    run_episode(devices, hold, 10, clock=FastClock())
    assert time.monotonic() - t0 < paced  # the fast clock does not wait


def test_real_time_clock_counts_overruns():
    from handover.sim_twin.clock import RealTimeClock

    clock = RealTimeClock(tolerance_s=0.001)
    clock.start(0.0)
    import time

    time.sleep(0.03)
    clock.wait_until(0.01)  # 20 ms late
    assert clock.overruns == 1 and clock.worst_lateness_s >= 0.019
