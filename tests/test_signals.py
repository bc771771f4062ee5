"""Ctrl-C (SIGINT) and SIGTERM end a long-running command cleanly: exit 130/143, one line saying
what was done, no traceback, and no half-written output (the real command, in a subprocess)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def run_until(argv: list[str], cwd: Path, ready: str, sig: int, timeout: float = 120.0) -> tuple[int, str]:
    """Start ``python -m handover ARGV``; once its output (stdout and stderr together) matches
    ``ready`` send ``sig``; return (exit code, output)."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "handover", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not re.search(ready, "".join(err)):
            assert proc.poll() is None, f"ended before {ready!r}: {''.join(err)}"
            assert time.monotonic() < deadline, f"no {ready!r} within {timeout} s: {''.join(err)}"
            time.sleep(0.05)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    return code, "".join(err)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_eval_stops_cleanly_and_writes_nothing_half(sig, code, word, tmp_path):
    (tmp_path / "eval.json").write_text("{\"an\": \"earlier report\"}\n")
    rc, err = run_until(["eval", "--episodes", "500", "--json", "eval.json"], tmp_path, r"\b[1-9]\d*/500\b", sig)
    assert rc == code, err
    assert "Traceback" not in err
    last = [line for line in re.split(r"[\r\n]", err) if line.strip()][-1]
    assert last.startswith(f"handover eval: {word}") and "episodes run" in last, last
    assert (tmp_path / "eval.json").read_text() == "{\"an\": \"earlier report\"}\n"  # the old report is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no partial files


def test_render_interrupted_leaves_no_partial_folder(tmp_path):
    pytest.importorskip("mujoco")
    from handover.sim_twin.render import gl_available

    if gl_available():
        pytest.skip(f"no offscreen OpenGL: {gl_available()}")
    rc, err = run_until(["twin", "render", "--out", "frames", "--steps", "300"], tmp_path, r"rendered step [1-9]", signal.SIGINT)
    assert rc == 130, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither frames/ nor its temporary folder


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_bringup_stops_cleanly_mid_run(sig, code, tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")
    rc, err = run_until(["bringup", "--episodes", "20"], tmp_path, r"releasing it", sig)
    assert rc == code, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("handover bringup: "), last
