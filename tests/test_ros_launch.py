"""``ros2 launch handover bringup.launch.py`` as ROS users run it: the real launch, launch_ros and
ros2cli (``../shared/ros2-launch/install.sh`` installs them here and in CI; a system ROS 2 has them)
on a regular, non-editable install of this repository in a temporary prefix.

What a user of the launch file can rely on: every node keeps its own name; ``lib/handover/handover_node``
runs with the interpreter the package was installed for; ``episodes:=N`` ends the whole launch with
the operator's exit status; ``backend:=real`` without hardware ends the whole launch, non-zero, with
the error. Where launch_ros does not import, the tests that need it skip and say why.

Time bounds are generous (a loaded 2-core machine); every launch runs in its own process group,
which is killed if a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Every node of the sim graph, by the name it gives itself (diagnostics and logs use these).
NODE_NAMES = ("twin", "thrower_arm_driver", "thrower_hand_driver", "catcher_arm_driver", "catcher_hand_driver",
              "object_tracker", "safety", "policy")


def _launch_missing() -> str | None:
    """Why ``ros2 launch`` cannot run here, or None."""
    try:
        import launch_ros.actions  # noqa: F401
        import ros2launch  # noqa: F401
    except ImportError as exc:  # no launch wheels (they come with a system ROS 2), or no stub on PYTHONPATH
        return (f"launch_ros / ros2launch do not import ({exc}); with ../shared present, "
                'eval "$(../shared/ros2-launch/install.sh)" installs them (.ci/run does)')
    if _ros2() is None:
        return "the ros2 command is not installed next to this interpreter nor on PATH"
    return None


def _ros2() -> str | None:
    beside = Path(sys.executable).with_name("ros2")
    return str(beside) if beside.is_file() else shutil.which("ros2")


LAUNCH_MISSING = _launch_missing()
needs_launch = pytest.mark.skipif(LAUNCH_MISSING is not None, reason=LAUNCH_MISSING or "")


@dataclass
class Installed:
    prefix: Path  # bin/handover, lib/handover/handover_node, share/handover/..., lib/pythonX.Y/site-packages
    env: dict  # AMENT_PREFIX_PATH and PYTHONPATH with the prefix first


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """A regular (non-editable) ``pip install`` of the working tree into a temporary prefix. The
    sources are copied first, so the build writes nothing into the repository."""
    root = tmp_path_factory.mktemp("install")
    src, prefix = root / "src", root / "prefix"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache"))
    # --ignore-installed: without it, pip uninstalls the environment's own (e.g. editable) handover
    # when it installs into another prefix
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                          "--prefix", str(prefix), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    site = next(prefix.glob("lib/python*/site-packages"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), *filter(None, [os.environ.get("AMENT_PREFIX_PATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    # the installed package, not the repository checkout (an editable install of it may be on the path too)
    where = subprocess.run([sys.executable, "-c", "import handover; print(handover.__file__)"], env=env, cwd=root,
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    return Installed(prefix, env)


def test_installing_puts_the_launch_file_package_xml_and_ament_marker_where_ros2_launch_looks(installed):
    for path in ("share/ament_index/resource_index/packages/handover", "share/handover/package.xml",
                 "share/handover/launch/bringup.launch.py", "lib/handover/handover_node", "bin/handover"):
        assert (installed.prefix / path).is_file(), f"{path} missing from the installed prefix"
    assert os.access(installed.prefix / "lib/handover/handover_node", os.X_OK)


def test_handover_node_runs_with_the_interpreter_it_was_installed_for(installed, tmp_path):
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    for name in ("python3", "python"):  # another Python first on PATH, one that cannot run anything
        (fake / name).write_text("#!/bin/sh\nexit 99\n")
        (fake / name).chmod(0o755)
    env = dict(installed.env, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert subprocess.run(["sh", "-c", "python3"], env=env, timeout=30).returncode == 99
    node = installed.prefix / "lib" / "handover" / "handover_node"
    out = subprocess.run([str(node), "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "usage:" in out.stdout and "node" in out.stdout
    # copied out of its prefix, it says what is missing instead of running some other Python
    stray = tmp_path / "a" / "b" / "c" / "handover_node"
    stray.parent.mkdir(parents=True)
    shutil.copy2(node, stray)
    out = subprocess.run([str(stray), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 127 and "bin/handover not found" in out.stderr, out.stderr


def test_a_process_wide_node_name_remap_renames_no_node_of_a_handover_node_process(tmp_path):
    """What a launch file's ``Node(name=...)`` passes (``--ros-args -r __node:=NAME``) would rename every
    node of a process, as rclpy applies it to each: ``handover node`` drops it and keeps the rest."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")
    from handover.runtime.node_process import split_ros_args

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    use_sim_time: false\n")
    launch_args = ["-r", "__node:=handover_cell", "--params-file", str(params), "--remap", "__name:=x",
                   "-r", "twin:__node:=twin_a", "-r", "/a:=/b"]
    kept, dropped = split_ros_args(launch_args)
    assert dropped == ["__node:=handover_cell", "__name:=x"]
    assert kept == ["--params-file", str(params), "-r", "twin:__node:=twin_a", "-r", "/a:=/b"]
    names = {}
    for label, args in (("as launched", launch_args), ("as handover node passes them", kept)):
        context = rclpy.Context()
        rclpy.init(args=["handover_node", "--ros-args", *args], context=context)
        try:
            nodes = [rclpy.create_node(n, context=context) for n in ("safety", "policy", "twin")]
            names[label] = [n.get_name() for n in nodes]
            for n in nodes:
                n.destroy_node()
        finally:
            context.try_shutdown()
    assert names["as launched"][:2] == ["handover_cell", "handover_cell"]  # the bug this avoids
    assert names["as handover node passes them"] == ["safety", "policy", "twin_a"]  # a remap aimed at one node stays


def _load_launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bringup_launch", REPO / "launch" / "bringup.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_launch
@pytest.mark.parametrize("backend, episodes, sets", [
    ("sim", "0", ["cell", "safety", "policy"]),
    ("sim", "2", ["cell", "safety", "policy", "operator"]),
    ("emulated", "0", ["cell", "safety", "policy"]),
    ("real", "0", ["drivers", "safety", "policy"]),
])
def test_launch_description_starts_the_node_sets_without_renaming_their_nodes(backend, episodes, sets):
    from launch import LaunchContext
    from launch.actions import RegisterEventHandler
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    ld = _load_launch_module().generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(backend=backend, episodes=episodes)
    for entity in ld.entities[:-1]:
        entity.visit(context)
    entities = ld.entities[-1].execute(context)
    nodes = [e for e in entities if isinstance(e, Node)]
    assert [n.node_executable for n in nodes] == ["handover_node"] * len(sets)
    # every process has a handler for its exit (it ends the launch)
    assert sum(isinstance(e, RegisterEventHandler) for e in entities) == len(nodes)
    for node, node_set in zip(nodes, sets):
        args = [perform_substitutions(context, part) for part in node.cmd[1:]]  # [0]: the installed executable
        assert args[:3] == [node_set, "--backend", backend]
        assert "-r" not in args and not any(a.startswith("__node:=") for a in args)  # no process-wide rename


@needs_launch
def test_a_process_exit_ends_the_launch_and_a_non_zero_exit_makes_it_fail():
    from launch import LaunchContext
    from launch.actions import Shutdown

    module = _load_launch_module()

    class Exited:
        def __init__(self, returncode):
            self.returncode = returncode

    context = LaunchContext()
    (done,) = module._on_exit("operator", 2)(Exited(0), context)
    assert isinstance(done, Shutdown)
    with pytest.raises(module.ProcessFailed, match="the operator process exited with code 2"):
        module._on_exit("operator", 2)(Exited(2), context)
    with pytest.raises(module.ProcessFailed, match="the drivers process exited with code 2"):
        module._on_exit("drivers", 0)(Exited(2), context)
    context._set_is_shutdown(True)  # exits while the launch stops everything are its own doing
    assert module._on_exit("cell", 0)(Exited(-2), context) is None


class Launch:
    """``ros2 launch handover bringup.launch.py ARGS`` in its own process group, output to a file."""

    def __init__(self, installed: Installed, folder: Path, *args: str):
        self.log = folder / "launch.log"
        self._file = open(self.log, "w")
        self.proc = subprocess.Popen([_ros2(), "launch", "handover", "bringup.launch.py", *args], env=installed.env,
                                     cwd=folder, stdout=self._file, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the launch did not end within {timeout} s; its output:\n{self.output()[-6000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:  # a failed test: nothing of the launch may outlive it
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        else:
            try:  # the launch ended; any process it left behind goes too
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._file.close()


@pytest.fixture
def launch(installed, tmp_path):
    started: list[Launch] = []

    def start(*args: str) -> Launch:
        started.append(Launch(installed, tmp_path, *args))
        return started[-1]

    yield start
    for each in started:
        each.close()


@needs_launch
def test_every_node_keeps_its_own_name_and_ctrl_c_ends_the_launch_cleanly(launch, ros_context):
    import rclpy

    observer = rclpy.create_node("launch_test_observer", context=ros_context)
    run = launch()  # episodes:=0: the cell, safety and policy processes run until stopped
    try:
        deadline = time.monotonic() + 90
        names: list[str] = []
        while time.monotonic() < deadline and run.proc.poll() is None:
            names = [n for n, _ in observer.get_node_names_and_namespaces()]
            if all(n in names for n in NODE_NAMES):
                break
            time.sleep(0.5)
        assert run.proc.poll() is None, f"the launch ended on its own:\n{run.output()[-6000:]}"
        time.sleep(2.0)  # discovery settles: a duplicate would show up by now
        names = [n for n, _ in observer.get_node_names_and_namespaces()]
    finally:
        observer.destroy_node()
    counts = {n: names.count(n) for n in NODE_NAMES}
    assert all(c == 1 for c in counts.values()), f"each node once: {counts}; all names seen: {sorted(names)}"
    assert "handover_cell" not in names
    # Ctrl-C in a terminal: SIGINT to every process of the launch, then launch's own SIGINT to each
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait(90) == 0, run.output()[-6000:]
    out = run.output()
    for label in ("cell-1", "safety-2", "policy-3"):
        assert f"[INFO] [{label}]: process has finished cleanly" in out, out[-6000:]


@needs_launch
def test_episodes_end_the_whole_launch_with_the_operators_exit_status(launch):
    run = launch("episodes:=2")
    assert run.wait(240) == 0, run.output()[-6000:]
    out = run.output()
    assert "[INFO] [operator-4]: process has finished cleanly" in out, out[-6000:]
    lines = out.splitlines()
    assert sum("[operator-4] episode " in line for line in lines) == 2, out[-6000:]
    assert any("[operator-4] summary: " in line for line in lines), out[-6000:]
    for label in ("cell-1", "safety-2", "policy-3"):  # the rest was stopped, not left running
        assert f"[INFO] [{label}]: process has finished cleanly" in out, out[-6000:]


@needs_launch
def test_backend_real_without_hardware_ends_the_whole_launch_non_zero_with_the_error(launch):
    run = launch("backend:=real")
    code = run.wait(180)
    out = run.output()
    assert code != 0, out[-6000:]
    # the drivers' error: the first device of the config's devices: that does not come up, and where
    assert "backend real: xarm/thrower/arm (devices.thrower.arm: xArm controller at 192.168.1.185:502) did not come up" \
        in out, out[-6000:]
    assert "the drivers process exited with code 2" in out, out[-6000:]
    # the launch ended: launch waits for every process it started, so none is left running


# The cell's "real" PD gains in the loop-closing test: the twin's nominal gains are off by these factors
CELL_GAINS = {"stiffness": {"thrower/arm": 1.35, "catcher/arm": 0.8, "thrower/hand": 0.75, "catcher/hand": 1.25},
              "damping": {"thrower/arm": 0.8, "catcher/arm": 1.25, "thrower/hand": 1.3, "catcher/hand": 0.85}}


def _config(tmp_path: Path, name: str, calibration_dir: Path) -> Path:
    """The default cell config with its bundle made absolute and its calibration folder replaced."""
    from handover.runtime.cell_config import DEFAULT_CONFIG_PATH

    path = tmp_path / name
    path.write_text(DEFAULT_CONFIG_PATH.read_text()
                    .replace("bundle: reference_bundle", f"bundle: {DEFAULT_CONFIG_PATH.parent / 'reference_bundle'}", 1)
                    .replace("calibration_dir: calibration", f"calibration_dir: {calibration_dir}", 1))
    return path


@needs_launch
def test_record_a_real_time_run_then_calibrate_the_twin_from_the_bag(launch, tmp_path, capsys):
    """record:=BAG records the real-time graph's run into a bag the mcap reader reads; replaying it in a
    twin whose PD gains differ from the cell's (here: the cell is the twin with CELL_GAINS), calibrating
    the gains from the same bag and replaying it again shrinks the divergence, and the report says how much."""
    from mcap.reader import make_reader

    from handover.calibration.pd_gains import GainFactors, write_gains
    from handover.cli import main

    write_gains(tmp_path / "cell_calibration" / "twin_pd_gains.yaml", GainFactors(**CELL_GAINS))
    cell = _config(tmp_path, "cell.yaml", tmp_path / "cell_calibration")
    twin = _config(tmp_path, "twin.yaml", tmp_path / "twin_calibration")
    bag = tmp_path / "run"
    run = launch("episodes:=2", f"record:={bag}", f"config:={cell}")
    assert run.wait(240) == 0, run.output()[-6000:]
    files = list(bag.glob("*.mcap"))
    assert len(files) == 1, run.output()[-6000:]
    with open(files[0], "rb") as f:
        topics = {channel.topic for _, channel, _ in make_reader(f).iter_messages()}
    assert {"/handover/thrower/arm/joint_states", "/handover/thrower/arm/joint_commands",
            "/handover/policy/step", "/handover/policy/episode_end"} <= topics, sorted(topics)

    assert main(["replay", str(bag), "--config", str(twin), "--out", str(tmp_path / "before")]) == 0
    t0 = time.monotonic()
    assert main(["calibrate", "gains", str(bag), "--config", str(twin)]) == 0
    seconds = time.monotonic() - t0
    capsys.readouterr()
    assert main(["replay", str(bag), "--config", str(twin), "--out", str(tmp_path / "after"),
                 "--baseline", str(tmp_path / "before" / "divergence.json")]) == 0
    printed = capsys.readouterr().out
    change = json.loads((tmp_path / "after" / "divergence.json").read_text())["vs_baseline"]["joint_tracking.rmse"]
    with capsys.disabled():
        print(f"\nreal-time run: gains calibrated from the bag in {seconds:.1f} s; replay joint RMSE "
              f"{change['before']:.4g} -> {change['after']:.4g} rad ({change['change_percent']:+.1f} %)")
    assert change["after"] < 0.75 * change["before"]
    assert f"({change['change_percent']:+.1f} %)" in printed
