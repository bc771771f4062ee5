"""What the D435 tracker costs per frame: ``rs.align`` + detection + deprojection, on this machine.

Frames: a synthetic scene drawn in numpy (no twin, no GL): a grey wall 2 m away and an orange sphere
(radius 2.5 cm) moving on a circle 1.3 m in front of the camera, at 848x480, pushed through the
emulated D435 (:mod:`.emulator`) into the real pipeline and read back by the real tracker
(:mod:`.driver`), one frameset per colour frame. Each stage is timed with ``time.perf_counter``
on one thread (ms): ``align`` (``rs.align.process``), ``detect`` (the colour + depth detector),
``deproject`` (``rs2_deproject_pixel_to_point`` + centre offset + camera-to-world), and
``total``, their sum per frame, and ``total_cpu``, the same span in this thread's CPU time
(``time.thread_time``: what the work costs when other processes compete for the cores; the load
average at the start is printed with it). Target: total p50 at most 3 ms per frame (``TARGET_MS``).

Run: ``python -m handover.drivers.realsense.benchmark [--frames N] [--json]``; or
:func:`run_benchmark` from code (the CLI's ``benchmark`` wiring calls :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

TARGET_MS = 3.0
WIDTH, HEIGHT, FOCAL_PX = 848, 480, 615.0
ORANGE = (242, 115, 25)  # the twin's object colour (0.95, 0.45, 0.1) in 8 bits


def synthetic_frame(centre_cam: np.ndarray, radius_m: float = 0.025, wall_m: float = 2.0,
                    width: int = WIDTH, height: int = HEIGHT, focal_px: float = FOCAL_PX) -> tuple[np.ndarray, np.ndarray]:
    """Depth (m, along the optical axis) and colour (uint8 RGB) of a sphere of ``radius_m`` at
    ``centre_cam`` (m, optical frame: x right, y down, z forward) before a grey wall ``wall_m``
    away; a pinhole with ``focal_px`` and the principal point at the image centre."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    u = (np.arange(width) - cx) / focal_px
    v = (np.arange(height) - cy) / focal_px
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)  # z = 1
    # sphere hit along each ray d (z = 1): t^2 |d|^2 - 2 t d.c + |c|^2 - r^2 = 0, depth = t
    a = np.einsum("hwk,hwk->hw", rays, rays)
    b = rays @ centre_cam
    disc = b * b - a * (centre_cam @ centre_cam - radius_m ** 2)
    hit = disc > 0
    depth = np.full((height, width), wall_m, dtype=np.float64)
    depth[hit] = (b[hit] - np.sqrt(disc[hit])) / a[hit]
    color = np.full((height, width, 3), 128, dtype=np.uint8)
    shade = np.clip(0.6 + 0.4 * (1.0 - (depth - depth[hit].min()) / radius_m), 0.3, 1.0) if hit.any() else None
    if hit.any():
        color[hit] = (np.asarray(ORANGE)[None, :] * shade[hit][:, None]).astype(np.uint8)
    return depth, color


@dataclass(frozen=True)
class StageStats:
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class BenchmarkResult:
    frames: int
    found: int
    align: StageStats
    detect: StageStats
    deproject: StageStats
    total: StageStats
    total_cpu: StageStats
    load_average: float = 0.0  # 1-minute load average when the run started
    cpus: int = 1
    target_ms: float = TARGET_MS

    @property
    def meets_target(self) -> bool:
        return self.total.p50_ms <= self.target_ms

    def lines(self) -> list[str]:
        out = [f"D435 tracker, {self.frames} framesets of 848x480 depth+colour ({self.found} with the object found); "
               f"load average {self.load_average:.2f} on {self.cpus} CPUs",
               f"{'stage':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"]
        for name in ("align", "detect", "deproject", "total", "total_cpu"):
            s: StageStats = getattr(self, name)
            out.append(f"{name:<10} {s.p50_ms:8.3f} {s.p99_ms:8.3f} {s.mean_ms:8.3f}")
        verdict = "meets" if self.meets_target else "MISSES"
        out.append(f"target: total p50 <= {self.target_ms} ms per frame: {verdict} "
                   f"(~{1000.0 / max(self.total.mean_ms, 1e-9):.0f} framesets/s on one thread)")
        return out


def _stats(samples: list[float]) -> StageStats:
    a = np.asarray(samples) * 1000.0
    return StageStats(float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean()))


def run_benchmark(frames: int = 300, warmup: int = 20, workdir: Optional[Path] = None) -> BenchmarkResult:
    """Time ``frames`` framesets (after ``warmup`` untimed ones) through the real pipeline."""
    import pyrealsense2 as rs  # noqa: F401 - fail here, with the import error, if it is missing

    from handover.drivers.realsense.config import RealSenseConfig
    from handover.drivers.realsense.driver import RealSenseTracker
    from handover.drivers.realsense.emulator import D435Emulator, EmulatorConfig
    from handover.drivers.realsense.intrinsics import StreamIntrinsics
    from handover.drivers.realsense.extrinsics import write_extrinsics

    clock = [0.0]
    intr = StreamIntrinsics(WIDTH, HEIGHT, FOCAL_PX, FOCAL_PX, (WIDTH - 1) / 2.0, (HEIGHT - 1) / 2.0)
    scenes = [synthetic_frame(np.array([0.3 * np.cos(a), 0.15 * np.sin(a), 1.3]))
              for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    k = [0]

    def source():
        depth, color = scenes[k[0] % len(scenes)]
        k[0] += 1
        return depth, color, clock[0]

    with tempfile.TemporaryDirectory() as tmp:
        cal = Path(workdir or tmp)
        serial = "BENCH-D435"
        write_extrinsics(cal / f"d435_{serial}.yaml", serial, np.eye(4))
        emu = D435Emulator(source, EmulatorConfig(intrinsics=intr, serial=serial, depth_fps=60, color_fps=60))
        tracker = RealSenseTracker(RealSenseConfig(serial=serial, calibration_dir=cal, depth_fps=60, color_fps=60),
                                   device=emu.device, clock=lambda: clock[0], wall_clock=lambda: clock[0])
        tracker.configure()
        queue, align, detector = tracker._queue, tracker._align, tracker.detector  # the tracker's own stages
        times: dict[str, list[float]] = {"align": [], "detect": [], "deproject": [], "total": [], "total_cpu": []}
        load = os.getloadavg()[0]
        found = 0
        try:
            for i in range(warmup + frames):
                clock[0] = (i + 1) / 60.0
                emu.capture()
                emu.deliver(clock[0])
                frame = queue.poll_for_frame()
                fs = frame.as_frameset() if frame else None
                if not fs:
                    raise RuntimeError(f"frameset {i} did not come out of the pipeline")
                c0, t0 = time.thread_time(), time.perf_counter()
                aligned = align.process(fs)
                t1 = time.perf_counter()
                depth = aligned.get_depth_frame()
                det = detector.detect(np.asanyarray(depth.get_data()), depth.get_units(),
                                      np.asanyarray(aligned.get_color_frame().get_data()))
                t2 = time.perf_counter()
                if det is not None:
                    tracker.to_world(det)
                t3, c3 = time.perf_counter(), time.thread_time()
                if i >= warmup:
                    found += det is not None
                    for name, dt in (("align", t1 - t0), ("detect", t2 - t1), ("deproject", t3 - t2), ("total", t3 - t0),
                                     ("total_cpu", c3 - c0)):
                        times[name].append(dt)
        finally:
            tracker.close()
    return BenchmarkResult(frames=frames, found=found, load_average=load, cpus=os.cpu_count() or 1,
                           **{n: _stats(v) for n, v in times.items()})


def main(argv: Optional[list[str]] = None) -> int:
    """Print the benchmark (a table, or JSON with ``--json``); exit 0 (1 if the target is missed and
    ``--strict`` was given)."""
    parser = argparse.ArgumentParser(prog="handover realsense-benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="framesets timed (default 300)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 if total p50 > {TARGET_MS} ms")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames: must be >= 1 (got {args.frames})")
    result = run_benchmark(args.frames)
    if args.json:
        print(json.dumps({**asdict(result), "meets_target": result.meets_target}, indent=2))
    else:
        print("\n".join(result.lines()))
    return 1 if args.strict and not result.meets_target else 0


if __name__ == "__main__":
    raise SystemExit(main())
