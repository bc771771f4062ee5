"""``handover calibrate extrinsics|gains``.

The ``calibrate`` group is shared: :func:`calibrate_subparsers` finds or creates it, so that a module
of another layer can add a subcommand to it. ``extrinsics`` is defined here (pure OpenCV on images);
``gains`` runs the twin, which ``calibration/`` may not import (tests/test_layering.py), so it is added
by :mod:`handover.sim_twin.gain_search` (``add_parser``). The CLI registers both modules.
"""

from __future__ import annotations

import argparse
import json
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


def add_parser(subparsers) -> None:
    p = calibrate_subparsers(subparsers).add_parser(
        "extrinsics", help="D435 pose in the world from ChArUco board images",
        description="Detect a ChArUco board in colour images and solve the pose of the camera's colour optical "
                    "frame (x right, y down, z forward) in the world frame: with the board at a known pose "
                    "(--board-pose) or held by a hand whose pose per image is given (--hand-poses, hand-eye). "
                    "Writes <calibration-dir>/d435_<serial>.yaml (the tracker's file) and a residual plot.")
    p.add_argument("images", type=Path, nargs="+", help="colour images (PNG/JPEG), or folders of them")
    p.add_argument("--serial", required=True, help="the D435's serial (names the calibration file)")
    p.add_argument("--intrinsics", type=Path, required=True,
                   help="YAML/JSON {fx, fy, ppx, ppy[, coeffs]} of the colour stream (pixels; librealsense's)")
    p.add_argument("--board", type=Path, default=None,
                   help=f"board YAML {{squares_x, squares_y, square_m, marker_m, dictionary}} (default {DEFAULT_BOARD})")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--board-pose", type=Path, help="YAML/JSON {matrix: 4x4} world_from_board (m)")
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
        print(f"wrote {result['file']} and {result['plot']}: {result['images_used']} images, "
              f"RMS reprojection {result['rms_px']:.3f} px (max {result['max_px']:.3f} px)")
    return 0
