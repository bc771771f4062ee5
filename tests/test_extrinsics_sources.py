"""Image sources of ``handover calibrate extrinsics`` besides image files: the D435 (through the real
pyrealsense2 pipeline) and a rosbag2 MCAP bag.

- the camera: :func:`handover.drivers.realsense.capture.capture_color` against the emulated D435 (a
  librealsense ``software_device``) fed with the twin's d435 view with a ChArUco board composed in
  at known poses; the "operator" moves the board after each ``frame k/N`` line; the captured frames
  are exactly the pushed ones, the intrinsics are the emulator's, and the calibration from them is
  within 2 mm and 0.2 deg of the truth; the pipeline is stopped after Ctrl-C; the CLI's
  ``--from-camera`` path end to end (the camera replaced by the emulator);
- a bag written with ``rosbags`` (MCAP storage, as the recorder writes) holding ``sensor_msgs/Image``
  (rgb8, bgr8, mono8) and ``sensor_msgs/CameraInfo``: the CLI writes ``d435_<serial>.yaml`` within
  2 mm and 0.2 deg and the residual plot;
- operator errors: exit 2, one line, no traceback, inputs unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'handover[hardware]')")
pytest.importorskip("rosbags", reason="rosbags is not installed")

from handover.calibration.commands import IMAGE_TOPIC, INFO_TOPIC  # noqa: E402
from handover.calibration.extrinsics import (BoardConfig, calibrate_known_board, detect,  # noqa: E402
                                             intrinsics_from_camera, pose_error)
from handover.cli import main  # noqa: E402
from handover.drivers.realsense.extrinsics import load_extrinsics  # noqa: E402
from handover.runtime.cell_config import load_cell_config  # noqa: E402

MAX_T_M, MAX_R_DEG = 0.002, 0.2
TILTS = [(0, 0, 0), (25, 0, 0), (0, 30, 0), (-20, 20, 5), (15, -25, -10), (0, -30, 20)]
SERIAL = "EMU-D435-CAL"


@pytest.fixture(scope="module")
def scene():
    """The twin's d435 view with the board at 6 known poses: (truth, stream intrinsics, images, poses)."""
    from handover.sim_twin.render import gl_available

    reason = gl_available()
    if reason:
        pytest.skip(reason)
    from handover.sim_twin.charuco_render import board_scene

    truth, stream, images, poses = board_scene(load_cell_config(), TILTS)
    return truth, stream, images, poses


# -------------------------------------------------------------------------------------------------
# the camera (emulated D435, real pipeline)


class Operator(io.StringIO):
    """The progress stream: moves the board to the next pose after each ``frame k/N`` line."""

    def __init__(self) -> None:
        super().__init__()
        self.moved = 0

    def write(self, text: str) -> int:
        self.moved += text.count("\n")
        return super().write(text)


class EmulatedCamera:
    """A D435 emulator showing ``images[operator.moved]``; ``pump`` streams one frame at 60 fps."""

    def __init__(self, stream, images):
        from handover.drivers.realsense.emulator import D435Emulator, EmulatorConfig

        self.images, self.t, self.operator = images, 0.0, Operator()  # t: the emulated host's clock, s
        self.depth = np.zeros((stream.height, stream.width), np.float32)
        self.emulator = D435Emulator(self._frame, EmulatorConfig(intrinsics=stream, serial=SERIAL, depth_fps=60, color_fps=60))
        self.pushed: list[int] = []

    def _frame(self):
        k = min(self.operator.moved, len(self.images) - 1)
        self.pushed.append(k)
        return self.depth, self.images[k], self.t

    def pump(self) -> None:
        self.t += 1 / 60
        self.emulator.capture()
        self.emulator.deliver(self.t)

    def clock(self) -> float:
        return self.t

    def options(self) -> dict:
        return {"pump": self.pump, "clock": self.clock, "progress": self.operator}


def test_capture_from_the_emulated_d435(scene):
    rs = pytest.importorskip("pyrealsense2")
    from handover.drivers.realsense.capture import capture_color

    truth, stream, images, poses = scene
    cam = EmulatedCamera(stream, images)
    cap = capture_color(cam.emulator.device, len(images), interval_s=0.2, **cam.options())
    lines = cam.operator.getvalue().splitlines()
    assert [line.split(";")[0] for line in lines] == [f"frame {k}/{len(images)}" for k in range(1, len(images) + 1)]
    assert "move the board" in lines[0] and "move the board" not in lines[-1]
    assert cap.serial == SERIAL
    for got, want in zip(cap.images, images):  # each frame is the pose shown after the interval, unchanged
        assert got.dtype == np.uint8 and np.array_equal(got, want)
    ci = cap.intrinsics
    assert (ci.width, ci.height, ci.fx, ci.fy, ci.ppx, ci.ppy) == pytest.approx(
        (stream.width, stream.height, stream.fx, stream.fy, stream.ppx, stream.ppy), abs=1e-4)
    assert ci.model == rs.distortion.none.name and not any(ci.coeffs)
    intr = intrinsics_from_camera(ci)
    dets = [detect(img, BoardConfig(), f"camera{k}") for k, img in enumerate(cap.images)]
    assert all(d is not None for d in dets)
    result = calibrate_known_board(dets, intr, poses)
    dt, dr = pose_error(result.world_from_camera, truth)
    print(f"from the emulated D435: {dt * 1000:.3f} mm, {dr:.4f} deg, RMS {result.rms_px:.3f} px")
    assert dt < MAX_T_M and dr < MAX_R_DEG


def test_capture_stops_the_pipeline_on_interrupt_and_timeout(scene):
    pytest.importorskip("pyrealsense2")
    from handover.drivers.realsense.capture import CaptureError, capture_color

    _, stream, images, _ = scene
    cam = EmulatedCamera(stream, images[:1])
    calls = [0]

    def interrupting_pump():
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        cam.pump()

    with pytest.raises(KeyboardInterrupt):
        capture_color(cam.emulator.device, 3, pump=interrupting_pump, clock=cam.clock, progress=cam.operator)
    with pytest.raises(CaptureError, match=f"no colour frame from the D435 {SERIAL} within 0.2 s"):
        capture_color(cam.emulator.device, 1, pump=lambda: None, timeout_s=0.2, progress=cam.operator)
    # both pipelines were stopped: the device opens again
    cap = capture_color(cam.emulator.device, 1, warmup=0, **cam.options())
    assert len(cap.images) == 1


def test_librealsense_distortion_as_opencv():
    rs = pytest.importorskip("pyrealsense2")
    from handover.drivers.realsense.intrinsics import StreamIntrinsics

    for model in ("brown_conrady", "inverse_brown_conrady"):
        ci = StreamIntrinsics(848, 480, 610.0, 612.0, 420.0, 245.0, model, (0.12, -0.25, 0.0008, -0.0005, 0.1))
        intr = intrinsics_from_camera(ci)
        pix = np.random.default_rng(0).uniform([0, 0], [847, 479], (100, 2))
        rays = np.array([rs.rs2_deproject_pixel_to_point(ci.to_rs(), [float(u), float(v)], 1.0) for u, v in pix])
        back = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), intr.matrix, intr.dist)[0].reshape(-1, 2)
        assert np.abs(back - pix).max() < 0.02, model
    assert intrinsics_from_camera(StreamIntrinsics(848, 480, 600, 600, 423.5, 239.5, "inverse_brown_conrady")).coeffs == (0.0,) * 5


def test_cli_from_camera(scene, tmp_path, monkeypatch, capsys):
    """``--from-camera`` end to end, the USB camera replaced by the emulator (no --intrinsics)."""
    pytest.importorskip("pyrealsense2")
    from handover.drivers.realsense import capture

    truth, stream, images, poses = scene
    cam = EmulatedCamera(stream, images)
    real = capture.capture_color
    seen = {}

    def on_emulator(camera, count, interval_s=0.0, **kw):
        seen.update(camera=camera, count=count, interval_s=interval_s)
        return real(cam.emulator.device, count, interval_s, **kw, **cam.options())

    monkeypatch.setattr(capture, "capture_color", on_emulator)
    (tmp_path / "poses.yaml").write_text(json.dumps({"matrix": [p.tolist() for p in poses]}))
    rc = main(["calibrate", "extrinsics", "--from-camera", "--serial", SERIAL, "--frames", str(len(images)),
               "--interval", "0.2", "--board-pose", str(tmp_path / "poses.yaml"), "--out", str(tmp_path / "calib"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and seen == {"camera": SERIAL, "count": len(images), "interval_s": 0.2}
    assert out["source"] == "camera" and out["intrinsics"]["fx"] == pytest.approx(stream.fx, abs=1e-4)
    dt, dr = pose_error(load_extrinsics(tmp_path / "calib" / f"d435_{SERIAL}.yaml", SERIAL), truth)
    print(f"CLI --from-camera: {dt * 1000:.3f} mm, {dr:.4f} deg, RMS {out['rms_px']:.3f} px")
    assert dt < MAX_T_M and dr < MAX_R_DEG


# -------------------------------------------------------------------------------------------------
# bags


def write_bag(path: Path, images, encoding: str = "rgb8", image_topic: str = IMAGE_TOPIC, stream=None,
              info_topic: str = INFO_TOPIC, repeat: int = 1) -> Path:
    """A rosbag2 MCAP bag (as runtime/recorder.py writes one) with each image ``repeat`` times, 0.1 s
    apart, and, if ``stream`` (intrinsics) is given, a CameraInfo before them."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    T = store.types
    Image, Info = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"]

    def header(ns: int):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10 ** 9, nanosec=ns % 10 ** 9),
                                        frame_id="camera_color_optical_frame")

    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        img_conn = writer.add_connection(image_topic, Image.__msgtype__, typestore=store)
        t = 10 ** 9
        if stream is not None:
            info_conn = writer.add_connection(info_topic, Info.__msgtype__, typestore=store)
            k = np.array([stream.fx, 0, stream.ppx, 0, stream.fy, stream.ppy, 0, 0, 1.0])
            p = np.array([stream.fx, 0, stream.ppx, 0, 0, stream.fy, stream.ppy, 0, 0, 0, 1.0, 0])
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = Info(header=header(t), height=stream.height, width=stream.width, distortion_model="plumb_bob",
                        d=np.zeros(5), k=k, r=np.eye(3).ravel(), p=p, binning_x=0, binning_y=0, roi=roi)
            writer.write(info_conn, t, store.serialize_cdr(info, Info.__msgtype__))
        for img in [im for im in images for _ in range(repeat)]:
            t += 10 ** 8
            data = {"rgb8": img, "bgr8": img[..., ::-1], "mono8": cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)}.get(encoding, img)
            data = np.ascontiguousarray(data)
            h, w = data.shape[:2]
            msg = Image(header=header(t), height=h, width=w, encoding=encoding, is_bigendian=0,
                        step=data.nbytes // h, data=data.reshape(-1))
            writer.write(img_conn, t, store.serialize_cdr(msg, Image.__msgtype__))
    finally:
        writer.close()
    return path


@pytest.mark.parametrize("encoding, mode", [("rgb8", "board pose"), ("bgr8", "hand-eye"), ("mono8", "board pose")])
def test_cli_from_bag(scene, tmp_path, capsys, encoding, mode):
    """12 images (each pose twice) and --frames 6: the evenly spread pick is one per pose. mono8:
    without CameraInfo, with --intrinsics. hand-eye: the board on a hand, its poses per image."""
    truth, stream, images, poses = scene
    with_info = encoding != "mono8"
    bag = write_bag(tmp_path / "bag", images, encoding, stream=stream if with_info else None, repeat=2)
    if mode == "board pose":
        (tmp_path / "poses.yaml").write_text(json.dumps({"matrix": [p.tolist() for p in poses]}))
        how = ["--board-pose", str(tmp_path / "poses.yaml")]
    else:
        hand_from_board = np.eye(4)
        hand_from_board[:3, :3] = cv2.Rodrigues(np.array([[0.3], [-0.2], [1.1]]))[0]
        hand_from_board[:3, 3] = [0.05, -0.02, 0.12]
        np.savez(tmp_path / "hands.npz", world_from_hand=np.array([p @ np.linalg.inv(hand_from_board) for p in poses]))
        how = ["--hand-poses", str(tmp_path / "hands.npz")]
    argv = ["calibrate", "extrinsics", "--bag", str(bag), "--frames", "6", "--serial", "42", *how,
            "--out", str(tmp_path / "calib"), "--json"]
    if not with_info:
        (tmp_path / "intr.yaml").write_text(json.dumps({"fx": stream.fx, "fy": stream.fy, "ppx": stream.ppx, "ppy": stream.ppy}))
        argv += ["--intrinsics", str(tmp_path / "intr.yaml")]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    assert out["source"] == "bag" and out["images_used"] == 6 and out["skipped"] == []
    assert out["intrinsics"]["fx"] == pytest.approx(stream.fx)
    dt, dr = pose_error(load_extrinsics(tmp_path / "calib" / "d435_42.yaml", "42"), truth)
    print(f"from a bag ({encoding}, {mode}): {dt * 1000:.3f} mm, {dr:.4f} deg, RMS {out['rms_px']:.3f} px")
    assert dt < MAX_T_M and dr < MAX_R_DEG
    assert (tmp_path / "calib" / "d435_42_residuals.png").stat().st_size > 0


# -------------------------------------------------------------------------------------------------
# operator errors

SMALL = [np.full((8, 10, 3), 40 * k, np.uint8) for k in range(6)]  # no board: errors come before detection
SMALL_INFO = type("Stream", (), {"width": 10, "height": 8, "fx": 10.0, "fy": 10.0, "ppx": 4.5, "ppy": 3.5})()


def _files(t: Path) -> None:
    (t / "a.png").write_bytes(cv2.imencode(".png", SMALL[0])[1].tobytes())
    (t / "pose.yaml").write_text(json.dumps({"matrix": np.eye(4).tolist()}))
    (t / "hands.yaml").write_text(json.dumps({"world_from_hand": [np.eye(4).tolist()] * 4}))


def _base(t: Path, *source: str, mode: str = "pose") -> list[str]:
    m = ["--board-pose", str(t / "pose.yaml")] if mode == "pose" else ["--hand-poses", str(t / "hands.yaml")]
    return ["calibrate", "extrinsics", *source, "--serial", "1", *m, "--out", str(t / "out")]


ERRORS = {
    "two sources": (lambda t: write_bag(t / "bag", SMALL, stream=SMALL_INFO),
                    lambda t: _base(t, str(t / "a.png"), "--bag", str(t / "bag")), "image files and --bag"),
    "no source": (lambda t: None, lambda t: _base(t), "got none"),
    "bag without the image topic": (
        lambda t: write_bag(t / "bag", SMALL, image_topic="/side/color/image_raw", stream=SMALL_INFO),
        lambda t: _base(t, "--bag", str(t / "bag")), "image topics: /side/color/image_raw"),
    "unsupported encoding": (lambda t: write_bag(t / "bag", SMALL, encoding="yuv422", stream=SMALL_INFO),
                             lambda t: _base(t, "--bag", str(t / "bag")), "'yuv422'"),
    "no CameraInfo, no --intrinsics": (lambda t: write_bag(t / "bag", SMALL),
                                       lambda t: _base(t, "--bag", str(t / "bag")), "no CameraInfo on /camera/color/camera_info"),
    "hand poses count (bag)": (lambda t: write_bag(t / "bag", SMALL, stream=SMALL_INFO),
                               lambda t: _base(t, "--bag", str(t / "bag"), mode="hands"), "4 hand poses for 6 images"),
    "hand poses count (camera)": (lambda t: None, lambda t: _base(t, "--from-camera", "--frames", "6", mode="hands"),
                                  "4 hand poses for 6 frames"),
    "camera not connected": (lambda t: None, lambda t: _base(t, "--from-camera"), "no D435 with serial 1 connected"),
    "an option of another source": (lambda t: write_bag(t / "bag", SMALL, stream=SMALL_INFO),
                                    lambda t: _base(t, "--bag", str(t / "bag"), "--interval", "2"), "--interval is for --from-camera"),
    "image files without --intrinsics": (lambda t: None, lambda t: _base(t, str(t / "a.png")), "--intrinsics FILE"),
    "bag missing": (lambda t: None, lambda t: _base(t, "--bag", str(t / "nobag")), "nobag"),
}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(ERRORS))
def test_operator_errors(name, tmp_path, capsys, monkeypatch):
    if "camera" in name:
        rs = pytest.importorskip("pyrealsense2")
        if "not connected" in name and any(d.get_info(rs.camera_info.serial_number) == "1" for d in rs.context().query_devices()):
            pytest.skip("a camera with serial 1 is connected")
    setup, argv, names = ERRORS[name]
    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    setup(tmp_path)
    before = _digest(tmp_path)
    rc = main(argv(tmp_path))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("handover calibrate extrinsics: ") and names in lines[0], lines[0]
    assert _digest(tmp_path) == before, "an input changed (or an output was written)"
    print(lines[0])
