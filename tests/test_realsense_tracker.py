"""The D435 tracker (handover.drivers.realsense) on the real pyrealsense2 SDK, against the emulated
D435 (a librealsense software_device) fed with the twin's rendered depth and colour.

- configuration and calibration files: validated, errors naming the source, key and value;
- the detector and the clock conversion on their own;
- the ObjectTrackerConformance suite on the real tracker against the emulator (twin frames);
- accuracy: the object placed at known positions in the twin, rendered, pushed through the SDK,
  tracked: the error to the truth (printed; asserted within ACCURACY_M);
- faults through the emulator: dropped frames (reads keep the newest observation, its stamp goes
  stale), late frames (delivered late with their capture stamps), the D435's 90/60 fps pairing.

Rendering needs offscreen OpenGL (MUJOCO_GL=egl): the twin tests skip, with the reason, without it.
The still scenes are rendered once per module (``StaticFrames``), so the SDK work dominates.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (pip install 'handover[hardware]'; it needs the Debian library libusb-1.0-0)")

from handover.drivers.conformance import ObjectTrackerConformance, ObjectTrackerHarness
from handover.drivers.device import DeviceFault, Lifecycle
from handover.drivers.realsense.benchmark import run_benchmark, synthetic_frame
from handover.drivers.realsense.config import DetectorConfig, RealSenseConfig, RealSenseConfigError
from handover.drivers.realsense.detector import ColorDepthDetector
from handover.drivers.realsense.driver import CaptureClock, RealSenseTracker
from handover.drivers.realsense.emulator import D435Emulator, EmulatorConfig, FaultConfig, StaticFrames
from handover.drivers.realsense.intrinsics import StreamIntrinsics
from handover.drivers.realsense.extrinsics import ExtrinsicsError, load_extrinsics, write_extrinsics
from handover.runtime.cell_config import load_cell_config

SERIAL = "EMU-D435-TEST"
DEPTH_PERIOD = 1.0 / 90.0
ACCURACY_M = 0.005  # tracked vs true object centre, m (measured: see test_tracked_position_matches_truth)
CORRIDOR = np.array([0.03, -0.675, 0.55])  # a point of the throw's path, in view of the d435 camera


class SimClock:
    """The caller's clock (s) in these tests: the emulated host's clock too."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def twin_frames():
    """The twin's d435 camera (skips without offscreen GL); yields the frame source."""
    from handover.sim_twin.render import gl_available

    reason = gl_available()
    if reason:
        pytest.skip(reason)
    from handover.sim_twin.d435_frames import TwinD435Frames

    frames = TwinD435Frames.from_config(load_cell_config())
    yield frames
    frames.close()


@pytest.fixture(scope="module")
def corridor_images(twin_frames):
    """Depth and colour of the object at CORRIDOR, rendered once."""
    twin_frames.set_object(CORRIDOR)
    depth, color, _ = twin_frames()
    return depth, color


@pytest.fixture
def calibration(tmp_path, twin_frames) -> Path:
    from handover.sim_twin.d435_frames import write_calibration

    write_calibration(twin_frames, tmp_path, SERIAL)
    return tmp_path


class Rig:
    """Emulator + tracker on one simulated clock; ``advance`` captures at the depth rate and
    delivers what is due, like a camera streaming while time passes."""

    def __init__(self, source, intrinsics: StreamIntrinsics, calibration_dir: Path, clock: SimClock,
                 depth_fps: int = 90, color_fps: int = 60, faults: FaultConfig = FaultConfig()):
        self.clock = clock
        self.emulator = D435Emulator(source, EmulatorConfig(intrinsics=intrinsics, serial=SERIAL, depth_fps=depth_fps,
                                                            color_fps=color_fps, faults=faults))
        self.tracker = RealSenseTracker(RealSenseConfig(serial=SERIAL, calibration_dir=calibration_dir,
                                                        depth_fps=depth_fps, color_fps=color_fps),
                                        device=self.emulator.device, clock=clock, wall_clock=clock)
        self.period = 1.0 / depth_fps
        self.next_capture = clock.t

    def advance(self, dt: float) -> float:
        target = self.clock.t + dt
        while self.next_capture <= target + 1e-12:
            self.clock.t = self.next_capture
            self.emulator.capture()
            self.next_capture += self.period
        self.clock.t = target
        self.emulator.deliver(target)
        return target

    def capture_and_read(self):
        """One frame captured now, delivered if due, read: the observation."""
        self.emulator.capture()
        self.emulator.deliver(self.clock.t)
        return self.tracker.read(self.clock.t)


@pytest.fixture
def static_rig(twin_frames, corridor_images, calibration):
    clock = SimClock()
    rig = Rig(StaticFrames(*corridor_images, clock), twin_frames.intrinsics, calibration, clock)
    yield rig
    rig.tracker.close()


# -------------------------------------------------------------------------------------------------
# configuration and calibration files


def test_config_defaults_are_the_d435_modes(tmp_path):
    cfg = RealSenseConfig.from_mapping({"serial": 123456789012, "calibration_dir": "cal"}, source="cell.yaml",
                                       base_dir=tmp_path)
    assert (cfg.width, cfg.height, cfg.depth_fps, cfg.color_fps) == (848, 480, 90, 60)
    assert cfg.serial == "123456789012" and cfg.extrinsics_path == tmp_path / "cal" / "d435_123456789012.yaml"


@pytest.mark.parametrize("raw, key, value", [
    ({"color_fps": 90}, "color_fps", "90"),
    ({"depth_fps": 100}, "depth_fps", "100"),
    ({"serial": ""}, "serial", "''"),
    ({"detector": {"hue_deg": 400}}, "detector.hue_deg", "400"),
    ({"detector": {"min_pixels": 2.5}}, "detector.min_pixels", "2.5"),
    ({"detector": {"colour": 1}}, "detector.colour", "unknown key"),
    ({"max_pair_skew_s": -1}, "max_pair_skew_s", "-1"),
    ({"fps": 90}, "fps", "unknown key"),
])
def test_config_errors_name_source_key_and_value(raw, key, value):
    with pytest.raises(RealSenseConfigError) as err:
        RealSenseConfig.from_mapping({"serial": "1", "calibration_dir": "/cal", **raw}, source="cell.yaml:tracker")
    message = str(err.value)
    assert message.startswith("cell.yaml:tracker: ") and f" {key}: " in message and value in message, message


def test_extrinsics_round_trip_both_forms(tmp_path):
    angle = 0.3
    pose = np.eye(4)
    pose[:3, :3] = [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    pose[:3, 3] = [1.0, -0.5, 0.8]
    path = write_extrinsics(tmp_path / "d435_42.yaml", "42", pose)
    np.testing.assert_allclose(load_extrinsics(path, "42"), pose, atol=1e-12)
    (tmp_path / "m.json").write_text('{"serial": "42", "matrix": %s}' % pose.tolist())
    np.testing.assert_allclose(load_extrinsics(tmp_path / "m.json", "42"), pose, atol=1e-12)


@pytest.mark.parametrize("body, key", [
    ("serial: '42'\ntranslation: [0, 0, 1]\nrotation_xyzw: [0, 0, 0, 2]\n", "rotation_xyzw"),
    ("serial: '42'\ntranslation: [0, 0]\nrotation_xyzw: [0, 0, 0, 1]\n", "translation"),
    ("serial: '42'\ntranslation: [0, 0, .nan]\nrotation_xyzw: [0, 0, 0, 1]\n", "translation"),
    ("serial: '43'\ntranslation: [0, 0, 1]\nrotation_xyzw: [0, 0, 0, 1]\n", "serial"),
    ("serial: '42'\ntranslation: [0, 0, 1]\n", "rotation_xyzw"),
    ("serial: '42'\nmatrix: [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]\n", "matrix"),
    ("serial: '42'\nmatrix: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]\n", "matrix[3]"),
    ("serial: '42'\nmatrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n", "matrix"),
    ("serial: '42'\nparent: base\nmatrix: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]\n", "parent"),
    ("serial: '42'\npose: [1, 2, 3]\n", "pose"),
    ("[1, 2]\n", "<top level>"),
])
def test_malformed_extrinsics_name_file_and_key(tmp_path, body, key):
    path = tmp_path / "d435_42.yaml"
    path.write_text(body)
    with pytest.raises(ExtrinsicsError) as err:
        load_extrinsics(path, "42")
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)


def test_missing_extrinsics_fault_the_tracker_at_configure(tmp_path):
    intr = StreamIntrinsics(848, 480, 615.0, 615.0, 423.5, 239.5)
    depth, color = synthetic_frame(np.array([0.0, 0.0, 1.3]))
    clock = SimClock()
    emu = D435Emulator(StaticFrames(depth, color, clock), EmulatorConfig(intrinsics=intr, serial=SERIAL))
    tracker = RealSenseTracker(RealSenseConfig(serial=SERIAL, calibration_dir=tmp_path), device=emu.device,
                               clock=clock, wall_clock=clock)
    with pytest.raises(DeviceFault, match=f"d435_{SERIAL}.yaml: camera extrinsics file not found"):
        tracker.configure()
    assert tracker.state is Lifecycle.FAULT and SERIAL in tracker.fault_reason
    tracker.close()


# -------------------------------------------------------------------------------------------------
# detector and clocks on their own


def test_detector_finds_the_synthetic_sphere_and_refuses_ambiguity():
    det = ColorDepthDetector(DetectorConfig())
    depth, color = synthetic_frame(np.array([0.1, -0.05, 1.3]))
    counts = np.rint(depth / 0.001).astype(np.uint16)
    found = det.detect(counts, 0.001, color)
    assert found is not None
    u, v = 423.5 + 615.0 * 0.1 / 1.3, 239.5 - 615.0 * 0.05 / 1.3  # projection of the centre, px
    assert abs(found.u - u) < 0.5 and abs(found.v - v) < 0.5, found
    assert 1.3 - 0.025 <= found.depth_m < 1.3 - 0.015  # near side of the sphere
    assert det.detect(counts, 0.001, np.full_like(color, 128)) is None and "no object-coloured" in det.last_reason
    two = np.where(synthetic_frame(np.array([-0.5, 0.0, 1.3]))[1] != 128, synthetic_frame(np.array([-0.5, 0.0, 1.3]))[1], color)
    assert det.detect(counts, 0.001, two) is None and "ambiguous" in det.last_reason
    assert det.detect(np.zeros_like(counts), 0.001, color) is None  # depth 0 (no data) never counts


def test_capture_clock_converts_each_domain():
    mono, wall = SimClock(), SimClock()
    mono.t, wall.t = 100.0, 1.7e9
    conv = CaptureClock(mono, wall)
    # system/global time: host realtime clock -> monotonic, with the clocks' current offset
    assert conv.to_clock((1.7e9 - 0.030) * 1000.0, rs.timestamp_domain.system_time) == pytest.approx(99.970)
    assert conv.to_clock((1.7e9 - 0.030) * 1000.0, rs.timestamp_domain.global_time) == pytest.approx(99.970)
    # hardware clock: offset = smallest (arrival - timestamp) seen
    assert conv.to_clock(5000.0, rs.timestamp_domain.hardware_clock) == pytest.approx(100.0)  # offset 95
    mono.t = 100.2
    assert conv.to_clock(5100.0, rs.timestamp_domain.hardware_clock) == pytest.approx(100.1)  # arrived 0.1 late
    mono.t = 100.21
    assert conv.to_clock(5200.0, rs.timestamp_domain.hardware_clock) == pytest.approx(100.20)  # 95.01 > 95: kept
    mono.t = 100.29
    assert conv.to_clock(5300.0, rs.timestamp_domain.hardware_clock) == pytest.approx(100.29)  # offset now 94.99
    assert conv.to_clock(5100.0, rs.timestamp_domain.hardware_clock) == pytest.approx(100.09)


# -------------------------------------------------------------------------------------------------
# the conformance suite: the real tracker against the emulator fed with the twin's frames


@pytest.fixture
def object_tracker_harness(static_rig) -> ObjectTrackerHarness:
    return ObjectTrackerHarness(device=static_rig.tracker, now=static_rig.clock, advance=static_rig.advance,
                                period_s=1.0 / 60.0, observe_s=0.1, make_failing=static_rig.tracker.fail_next)


class TestRealSenseTrackerConformance(ObjectTrackerConformance):
    pass


# -------------------------------------------------------------------------------------------------
# accuracy against the twin's truth


# Object centres (m, world) along and around the throw's path, in view of the d435 camera and
# clear of the arms; orientations (w x y z) upright and yawed.
_POSITIONS = [(0.03, -0.675, 0.55), (0.0, -0.55, 0.50), (0.06, -0.80, 0.60), (-0.05, -0.70, 0.45),
              (0.10, -0.60, 0.65), (0.02, -0.90, 0.52), (-0.02, -0.48, 0.62), (0.08, -0.75, 0.48)]
_YAWS = [0.0, 0.0, 0.4, 0.0, -0.3, 0.0, 0.6, 0.0]


def test_tracked_position_matches_truth(twin_frames, calibration):
    clock = SimClock()
    rig = Rig(twin_frames, twin_frames.intrinsics, calibration, clock, depth_fps=60, color_fps=60)
    rig.tracker.configure()
    errors = []
    try:
        for k, (position, yaw) in enumerate(zip(_POSITIONS, _YAWS)):
            clock.t = twin_frames.data.time = (k + 1) / 60.0
            twin_frames.set_object(position, (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)))
            obs = rig.capture_and_read()
            assert obs.valid, f"object at {position} not found: {rig.tracker.last_reason}"
            assert obs.stamp == pytest.approx(clock.t, abs=1e-9)
            errors.append(np.asarray(obs.position) - position)
    finally:
        rig.tracker.close()
    norms = np.linalg.norm(errors, axis=1)
    print(f"\nD435 tracker vs twin truth over {len(norms)} positions: mean {1000 * norms.mean():.2f} mm, "
          f"max {1000 * norms.max():.2f} mm; mean error x y z (mm): {np.round(1000 * np.mean(errors, axis=0), 2)}")
    assert norms.max() < ACCURACY_M, norms


def test_object_out_of_view_is_not_valid(twin_frames, calibration):
    clock = SimClock()
    rig = Rig(twin_frames, twin_frames.intrinsics, calibration, clock, depth_fps=60, color_fps=60)
    rig.tracker.configure()
    try:
        clock.t = twin_frames.data.time = 1.0
        twin_frames.set_object((3.0, -0.675, 0.5))  # behind the camera
        obs = rig.capture_and_read()
        assert not obs.valid and obs.position is None and obs.stamp == pytest.approx(1.0)
        assert "no object-coloured" in rig.tracker.last_reason
    finally:
        rig.tracker.close()


# -------------------------------------------------------------------------------------------------
# faults through the emulator


def test_dropped_frames_leave_the_newest_observation_with_a_stale_stamp(static_rig):
    rig, tracker = static_rig, static_rig.tracker
    tracker.configure()
    tracker.activate()
    obs = tracker.read(rig.advance(0.05))
    assert obs.valid
    last = obs.stamp
    rig.emulator.drop_next(6)  # ~67 ms of frames lost
    for _ in range(5):
        now = rig.advance(DEPTH_PERIOD)
        obs = tracker.read(now)
        assert obs.valid and obs.stamp == last, "no new frame: the same observation, its stamp ageing"
    assert now - obs.stamp > 0.05
    now = rig.advance(3 * DEPTH_PERIOD)
    obs = tracker.read(now)
    assert obs.valid and obs.stamp > last and now - obs.stamp < 2 * DEPTH_PERIOD
    assert rig.emulator.stats.dropped == 6


def test_random_drops_and_late_frames_never_break_the_stamp_invariants(twin_frames, corridor_images, calibration):
    clock = SimClock()
    rig = Rig(StaticFrames(*corridor_images, clock), twin_frames.intrinsics, calibration, clock,
              faults=FaultConfig(drop_probability=0.3, late_probability=0.2, late_s=0.03, seed=3))
    tracker = rig.tracker
    tracker.configure()
    previous = -math.inf
    valid = 0
    for _ in range(60):
        now = rig.advance(1.0 / 60.0)
        obs = tracker.read(now)
        assert previous <= obs.stamp <= now
        previous = obs.stamp
        valid += obs.valid
    tracker.close()
    assert valid > 40 and rig.emulator.stats.dropped > 5 and rig.emulator.stats.delayed > 3


def test_late_frames_keep_their_capture_stamps(static_rig):
    rig, tracker = static_rig, static_rig.tracker
    tracker.configure()
    rig.advance(0.05)
    before = tracker.read(rig.clock.t)
    # one late frame, alone: arrives 40 ms after capture, stamped with its capture time
    rig.emulator.delay_next(0.040)
    rig.clock.t += 1.0 / 60.0
    captured = rig.emulator.capture()
    assert rig.emulator.deliver(rig.clock.t) == 0 and tracker.read(rig.clock.t).stamp == before.stamp
    rig.clock.t = captured + 0.040
    assert rig.emulator.deliver(rig.clock.t) == 1
    obs = tracker.read(rig.clock.t)
    assert obs.valid and obs.stamp == pytest.approx(captured, abs=1e-9)
    # a late frame holds back the frames behind it (as a stalled USB transfer): they arrive
    # together, each with its own capture stamp; the read returns the newest
    rig.emulator.delay_next(0.050)
    rig.clock.t += 1.0 / 60.0
    first = rig.emulator.capture()
    rig.clock.t += 1.0 / 60.0
    second = rig.emulator.capture()
    assert rig.emulator.deliver(rig.clock.t) == 0 and rig.emulator.pending() == 2
    rig.clock.t = first + 0.050
    assert rig.emulator.deliver(rig.clock.t) == 2
    obs = tracker.read(rig.clock.t)
    assert obs.stamp == pytest.approx(second, abs=1e-9) and obs.stamp < rig.clock.t - 0.03


def test_d435_rates_pair_each_colour_frame_once(static_rig):
    """Depth 90 fps, colour 60 fps: 60 observations a second, each stamped on the colour schedule."""
    rig, tracker = static_rig, static_rig.tracker
    tracker.configure()
    stamps = []
    for _ in range(90):
        obs = tracker.read(rig.advance(DEPTH_PERIOD))
        if not stamps or obs.stamp != stamps[-1]:
            stamps.append(obs.stamp)
    # captures at 0, 1/90, ..., 1 s: 61 on the colour schedule, each used once, every one found
    assert tracker.stats.framesets == len(stamps) == 61 and tracker.stats.found == 61, tracker.stats
    assert np.allclose(np.diff(stamps), 1.0 / 60.0, atol=DEPTH_PERIOD / 2 + 1e-9)


def test_benchmark_runs_and_finds_every_frame():
    result = run_benchmark(frames=40, warmup=5)
    assert result.found == 40 and 0 < result.total.p50_ms < 50
    assert result.total.p50_ms >= result.align.p50_ms
    print("\n" + "\n".join(result.lines()))
