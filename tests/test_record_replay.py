"""Recording (rosbag2 MCAP, written with rosbags) read back with the independent ``mcap`` reader, crash
safety of the recorder, and the replay of a recorded twin run (open and closed loop)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("mcap_ros2")
pytest.importorskip("sensor_msgs", reason="ROS 2 messages are not installed")

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config  # noqa: E402
from handover.runtime.errors import InputError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CFG = load_cell_config()
STEPS = 40
EPISODES = 2


def _record_twin_run(path: Path, episodes: int = 1, gain_factors=None) -> None:
    """Short policy episodes in the twin (devices, reference bundle), written as the recorder would:
    joint states, joint commands, object observations and the policy steps, CDR via rclpy. Between
    episodes the object is placed back at its start (the robots stay), as the twin node's service does.
    ``gain_factors``: the twin's PD gain factors (default: nominal; the test config has no calibration)."""
    from rclpy.serialization import serialize_message

    from handover.calibration.pd_gains import GainFactors
    from handover.runtime.contract import ContractSpec
    from handover.runtime.policy_controller import PolicyController
    from handover.runtime.policy_networks import PolicyNetworks
    from handover.runtime.recorder import BagWriter, record_topics
    from handover.runtime.ros_interface import GROUPS, SIDES, Topics, joint_names, joint_state_msg, point_msg
    from handover.runtime.step_topic import POLICY_STEP_TOPIC, PolicyStepRecord, step_msg
    from handover.sim_twin.devices import TwinDevices
    from handover.sim_twin.episode import run_episode
    from handover.sim_twin.twin import Twin

    topics = Topics.from_config(CFG)
    keys = [(s, g) for s in SIDES for g in GROUPS]
    names = [n for k in keys for n in joint_names(CFG, *k)]
    writer = BagWriter(path, record_topics(CFG))
    twin = Twin(CFG, gain_factors=gain_factors or GainFactors())
    devices = TwinDevices.create(twin)
    devices.bring_up()
    goal = np.array(CFG.goal.center) + [0.02, -0.01, 0.0]
    ctrl = PolicyController(ContractSpec.from_config(CFG), PolicyNetworks.load(CFG.models.bundle), goal,
                            CFG.object.start_position)

    seen = set()

    def write(topic, msg, t):
        writer.write(topic, int(t * 1e9), serialize_message(msg))

    token = ""

    def write_group(topic, t, values, frame_id=""):
        i = 0
        for k in keys:
            n = joint_names(CFG, *k)
            write(topic[k], joint_state_msg(n, t, values[i:i + len(n)], frame_id=frame_id), t)
            i += len(n)

    class Published:
        """The controller, its commands published as the policy node does (the targets it asked for,
        before the drivers' gate), the episode's first hold pose included."""

        def reset(self):
            targets = ctrl.reset()
            write_group(topics.joint_commands, twin.time, targets, token)
            return targets

        def targets(self, t, q, obs):
            targets = ctrl.targets(t, q, obs)
            write_group(topics.joint_commands, t, targets, token)
            return targets

    def on_step(rec):
        t = rec.time - CFG.control_period_s  # the step's start: when it read and commanded
        write_group(topics.joint_states, t, rec.joint_positions)
        obs = rec.observation
        if obs.valid and obs.stamp not in seen:  # each camera frame once, stamped with its capture time
            seen.add(obs.stamp)
            write(topics.object_position, point_msg(obs.stamp, obs.position), t)
        res = ctrl.last_result
        write(POLICY_STEP_TOPIC, step_msg(names, PolicyStepRecord(
            t, token, rec.step, rec.joint_positions, obs.position if obs.valid else np.full(3, np.nan), obs.valid,
            goal, np.asarray(res.targets, float), np.asarray(res.predicted_goal_world, float).ravel())), t)

    for e in range(episodes):
        token = f"i/{e + 1}"
        if e:
            twin.place_object()
        run_episode(devices, Published(), STEPS, on_step=on_step)
    writer.close()


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "run1"
    _record_twin_run(path, EPISODES)
    return path


def test_bag_is_rosbag2_mcap_read_by_the_mcap_library(bag):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    assert (bag / "metadata.yaml").is_file() and (bag / "run1.mcap").is_file()
    meta = (bag / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "/handover/policy/step" in meta
    counts = {}
    with open(bag / "run1.mcap", "rb") as f:
        for schema, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/handover/thrower/arm/joint_commands":
                assert schema.name == "sensor_msgs/msg/JointState" and len(msg.position) == 6
    assert counts["/handover/thrower/arm/joint_states"] == STEPS * EPISODES
    assert counts["/handover/policy/step"] == STEPS * EPISODES


def test_open_loop_replay_reproduces_the_twin_run(bag, tmp_path):
    from handover.sim_twin.replay_bag import replay

    rep = replay(bag, CFG, "open", out=tmp_path / "open")
    # The same twin from the recorded start: only the object's state differs, fitted from noisy camera
    # frames (about 1 mm here); in contact with the hand that moves the joints by up to ~12 mrad.
    assert rep["joint_tracking"]["rmse"] < 5e-3, rep["joint_tracking"]
    # The object follows its recorded path within the camera's noise, in both episodes: it is set from
    # the recorded frames at the start and again at the second episode's first step (placed back).
    assert rep["object_path"]["placements"] == EPISODES
    assert rep["object_path"]["samples"] > 10 * EPISODES and rep["object_path"]["rmse"] < 0.02, rep["object_path"]
    saved = json.loads((tmp_path / "open" / "divergence.json").read_text())
    assert set(saved["joint_tracking"]["per_joint"]) == set(CFG.joint_names)
    assert (tmp_path / "open" / "joints.png").stat().st_size > 1000
    # a window, and the change against a baseline report
    rep2 = replay(bag, CFG, "open", start=0.2, end=0.5, out=tmp_path / "win",
                  baseline=tmp_path / "open" / "divergence.json")
    assert rep2["window_s"] == [0.2, 0.5] and "joint_tracking.rmse" in rep2["vs_baseline"]


# The cell's "real" PD gains in the loop-closing test: the twin's nominal gains are off by these factors
CELL_GAINS = {"stiffness": {"thrower/arm": 1.35, "catcher/arm": 0.8, "thrower/hand": 0.75, "catcher/hand": 1.25},
              "damping": {"thrower/arm": 0.8, "catcher/arm": 1.25, "thrower/hand": 1.3, "catcher/hand": 0.85}}


def test_calibrating_gains_from_the_bag_shrinks_its_replay_divergence(tmp_path, capsys):
    """Point 5 through the commands an operator runs: replay a bag of a cell whose gains differ from the
    twin's, calibrate the twin's gains from the same bag, replay it again against the first report."""
    from handover.calibration.pd_gains import GainFactors, load_gains
    from handover.cli import main

    bag = tmp_path / "cell_run"
    _record_twin_run(bag, EPISODES, GainFactors(**CELL_GAINS))
    calib = tmp_path / "calibration"
    config = tmp_path / "cell.yaml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text()
                      .replace("bundle: reference_bundle", f"bundle: {DEFAULT_CONFIG_PATH.parent / 'reference_bundle'}", 1)
                      .replace("calibration_dir: calibration", f"calibration_dir: {calib}", 1))
    assert main(["replay", str(bag), "--config", str(config), "--out", str(tmp_path / "before")]) == 0
    t0 = time.monotonic()
    assert main(["calibrate", "gains", str(bag), "--config", str(config)]) == 0
    seconds = time.monotonic() - t0
    factors = load_gains(calib / "twin_pd_gains.yaml")
    capsys.readouterr()
    assert main(["replay", str(bag), "--config", str(config), "--out", str(tmp_path / "after"),
                 "--baseline", str(tmp_path / "before" / "divergence.json")]) == 0
    printed = capsys.readouterr().out
    after = json.loads((tmp_path / "after" / "divergence.json").read_text())
    change = after["vs_baseline"]["joint_tracking.rmse"]
    with capsys.disabled():
        print(f"\ncalibrated from the bag in {seconds:.1f} s: " + ", ".join(
            f"{g} kp x{factors.kp(g):.3f} (true {CELL_GAINS['stiffness'][g]}) kd x{factors.kd(g):.3f} "
            f"(true {CELL_GAINS['damping'][g]})" for g in CELL_GAINS["stiffness"]))
        print(f"replay joint RMSE {change['before']:.4g} -> {change['after']:.4g} rad ({change['change_percent']:+.1f} %)")
    assert change["after"] < 0.5 * change["before"]
    assert f"({change['change_percent']:+.1f} %)" in printed  # the operator is told by how much
    for g in CELL_GAINS["stiffness"]:  # within 10 %: a policy run excites the joints less than a calibration run
        assert factors.kp(g) == pytest.approx(CELL_GAINS["stiffness"][g], rel=0.1), g
        assert factors.kd(g) == pytest.approx(CELL_GAINS["damping"][g], rel=0.1), g


def test_closed_loop_replay_gives_the_recorded_commands(bag, tmp_path):
    from handover.sim_twin.replay_bag import replay

    rep = replay(bag, CFG, "closed", out=tmp_path / "closed")
    assert rep["command_difference"]["steps"] == STEPS * EPISODES
    assert rep["command_difference"]["max"] < 1e-5
    assert rep["predicted_goal_difference"]["max"] < 1e-5


def test_truncated_bag_is_one_clear_error(bag, tmp_path):
    from handover.runtime.bag_reader import read_bag

    cut = tmp_path / "cut.mcap"
    data = (bag / "run1.mcap").read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    with pytest.raises(InputError, match=r"truncated or corrupt bag .*readable: \d+ messages over"):
        read_bag(cut)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not a bag at all")
    with pytest.raises(InputError, match="not an MCAP file"):
        read_bag(junk)


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String
    from handover.runtime.recorder import BagWriter, RecordTopic
    w = BagWriter(sys.argv[1], [RecordTopic("/t", "std_msgs/msg/String", "events")], flush_period_s=0.5)
    print("ready", flush=True)
    while True:
        now = time.time_ns()
        w.write("/t", now, serialize_message(String(data=str(now))))
        time.sleep(0.002)
""")


def test_a_killed_recorder_loses_at_most_the_last_second(tmp_path):
    from mcap.stream_reader import StreamReader
    from mcap.records import Message

    from handover.runtime.bag_reader import read_bag

    path = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(2.3)
        t_kill = time.time_ns()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    # the independent reader, record by record (no footer after a crash)
    last, n = 0, 0
    with open(path / "crash.mcap", "rb") as f:
        try:
            for rec in StreamReader(f).records:
                if isinstance(rec, Message):
                    last, n = max(last, rec.log_time), n + 1
        except Exception:  # noqa: BLE001 - the stream ends without a footer
            pass
    assert n > 100
    assert (t_kill - last) * 1e-9 < 1.0, f"lost {(t_kill - last) * 1e-9:.2f} s"
    bag = read_bag(path)  # the project's reader replays it and says it did not close
    assert not bag.complete and len(bag.messages) == n
