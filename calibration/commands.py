"""``handover calibrate extrinsics|gains``.

The ``calibrate`` group is shared: :func:`calibrate_subparsers` finds or creates it, so that a module
of another layer can add a subcommand to it. ``extrinsics`` is defined here (pure OpenCV on images);
``gains`` runs the twin, which ``calibration/`` may not import (tests/test_layering.py), so it is added
by :mod:`handover.sim_twin.gain_search` (``add_parser``). The CLI registers both modules.

``extrinsics`` takes its images from exactly one source (:func:`handover.calibration.extrinsics.run_cli`):
image files or folders (``IMAGES``, with ``--intrinsics``), the connected D435 ``--serial``
(``--from-camera [--frames N] [--interval S]``, through ``pyrealsense2``; intrinsics from the colour
stream), or a rosbag2 MCAP bag (``--bag BAG [--frames N] [--image-topic T] [--info-topic T]``;
intrinsics from its CameraInfo). Operator mistakes (two sources or none, an option of another
source, a missing file, topic or camera, an unsupported encoding, missing intrinsics, a hand pose
count that is not the image count) print one line ``handover calibrate extrinsics: ...``, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path


def calibrate_subparsers(subparsers):
    """The sub-parsers of ``handover calibrate`` (created on first use)."""
    parser = subparsers.choices.get("calibrate")
    if parser is None:
        parser = subparsers.add_parser(
            "calibrate", help="calibrate the cell: camera extrinsics from ChArUco images, the twin's PD gains",
            description="Calibrations of the cell, written to the calibration files the devices and the twin load.")
        parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
        parser._calibrate_sub = parser.add_subparsers(dest="calibration", metavar="CALIBRATION")
    return parser._calibrate_sub


DEFAULT_BOARD = "7x5 squares of 60 mm, 45 mm markers, DICT_5X5_100"  # for --help: calibration.extrinsics.BoardConfig()
DEFAULT_FRAMES = 12  # --frames: images captured (--from-camera) or taken at most from a bag (--bag)
IMAGE_TOPIC, INFO_TOPIC = "/camera/color/image_raw", "/camera/color/camera_info"  # --bag defaults: realsense-ros's names


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number >= 0")
    return value


def add_parser(subparsers) -> None:
    from handover.drivers.realsense.config import RealSenseConfig
    from handover.runtime.cli_values import positive_int

    mode = {f.name: f.default for f in dataclasses.fields(RealSenseConfig)}

    p = calibrate_subparsers(subparsers).add_parser(
        "extrinsics", help="D435 pose in the world from ChArUco board images (files, the camera or a bag)",
        description="Detect a ChArUco board in colour images and solve the pose of the camera's colour optical "
                    "frame (x right, y down, z forward) in the world frame: with the board at a known pose "
                    "(--board-pose) or held by a hand whose pose per image is given (--hand-poses, hand-eye). "
                    "The images come from exactly one source: image files or folders, the D435 itself "
                    "(--from-camera: --frames colour frames --interval seconds apart through the pyrealsense2 "
                    "pipeline, intrinsics from the stream), or a rosbag2 MCAP bag (--bag: sensor_msgs/Image rgb8, "
                    "bgr8 or mono8, intrinsics from its CameraInfo). "
                    "Writes <calibration-dir>/d435_<serial>.yaml (the tracker's file) and a residual plot.")
    p.add_argument("images", type=Path, nargs="*", metavar="IMAGES",
                   help="colour images (PNG/JPEG), or folders of them (one image source of three)")
    p.add_argument("--from-camera", action="store_true",
                   help=f"capture the images with the connected D435 --serial (colour {mode['width']}x{mode['height']} "
                        f"RGB8 at {mode['color_fps']} fps, the tracker's mode; intrinsics from the stream profile)")
    p.add_argument("--bag", type=Path, default=None,
                   help="take the images from a rosbag2 MCAP bag (folder or .mcap): --image-topic, intrinsics from --info-topic")
    p.add_argument("--serial", required=True,
                   help="the D435's serial (names the calibration file; --from-camera opens this camera)")
    p.add_argument("--intrinsics", type=Path, default=None, metavar="FILE",
                   help="YAML/JSON {fx, fy, ppx, ppy[, coeffs]} of the colour stream (pixels; librealsense's; OpenCV "
                        "coefficients): required with image files, and a bag without CameraInfo; overrides the "
                        "camera's or the bag's")
    p.add_argument("--frames", type=positive_int, default=None, metavar="N",
                   help=f"--from-camera: frames to capture; --bag: at most N images, spread evenly over the bag "
                        f"(default {DEFAULT_FRAMES})")
    p.add_argument("--interval", type=_seconds, default=None, metavar="S",
                   help="--from-camera: seconds between two frames, to move the board (default 0: consecutive frames)")
    p.add_argument("--image-topic", default=None, metavar="TOPIC",
                   help=f"--bag: the sensor_msgs/Image topic (default {IMAGE_TOPIC})")
    p.add_argument("--info-topic", default=None, metavar="TOPIC",
                   help=f"--bag: the sensor_msgs/CameraInfo topic (default {INFO_TOPIC})")
    p.add_argument("--board", type=Path, default=None,
                   help=f"board YAML {{squares_x, squares_y, square_m, marker_m, dictionary}} (default {DEFAULT_BOARD})")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--board-pose", type=Path,
                       help="YAML/JSON {matrix: 4x4} world_from_board (m), or a list of 4x4, one per image in order")
    group.add_argument("--hand-poses", type=Path,
                       help=".npz or YAML with 'world_from_hand' (N, 4, 4), one per image in order (m; forward kinematics)")
    p.add_argument("--out", type=Path, required=True, help="calibration folder (the cell config's devices.calibration_dir)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run_extrinsics)


def _run_extrinsics(args: argparse.Namespace) -> int:
    from handover.calibration import extrinsics as ex

    try:
        result = ex.run_cli(args)
    except ex.CalibrationInputError as exc:
        print(f"handover calibrate extrinsics: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"wrote {result['file']} and {result['plot']}: {result['images_used']} images ({result['source']}), "
              f"RMS reprojection {result['rms_px']:.3f} px (max {result['max_px']:.3f} px)")
    return 0
