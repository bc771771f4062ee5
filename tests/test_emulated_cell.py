"""The whole stack down to the wire: ``--backend emulated`` runs the real drivers (xarm-python-sdk over
TCP, python-can, pyrealsense2) against the emulators on the twin, in the twin node's process; faults
injected through the protocols (an xArm collision, an Allegro over-temperature bit) put the right
device in FAULT, the policy stops commanding it, /diagnostics names the device and the vendor's
error, and the documented recovery (the driver node's ``~/recover`` service) brings the cell back.
The conformance suite runs per driver in the drivers' own tests.

Needs port 502 on loopback (root here; CAP_NET_BIND_SERVICE otherwise) and the hardware extra."""

from __future__ import annotations

import queue
import subprocess
import sys
import time

import pytest

for _module, _package in (("xarm", "xarm-python-sdk"), ("can", "python-can"), ("pyrealsense2", "pyrealsense2"),
                          ("rclpy", "rclpy")):
    pytest.importorskip(_module, reason=f"{_package} is not installed")

from handover.drivers.device import Lifecycle  # noqa: E402
from handover.drivers.xarm.testing import port_502_problem  # noqa: E402
from handover.runtime.cell_config import load_cell_config  # noqa: E402
from handover.runtime.ros_interface import NodeState  # noqa: E402
from support import wait_for  # noqa: E402

_PROBLEM = port_502_problem()
pytestmark = pytest.mark.skipif(bool(_PROBLEM), reason=f"the emulated xArm controllers need port 502: {_PROBLEM}")
CFG = load_cell_config()


def test_bringup_backend_emulated_runs_episodes():
    r = subprocess.run([sys.executable, "-m", "handover", "bringup", "--backend", "emulated", "--episodes", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "(backend emulated, real time)" in r.stdout
    assert "summary: " in r.stdout and "episodes caught" in r.stdout and "; 2 run\n" in r.stdout


@pytest.fixture(scope="module")
def cell():
    """One emulated cell for the fault tests (built once: ~5 s), with the operator and a /diagnostics log."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    from handover.runtime.bringup import Operator
    from handover.runtime.node_graph import build_graph
    from handover.runtime.ros_interface import qos_events

    context = rclpy.Context()
    rclpy.init(context=context)
    graph = build_graph(CFG, context, "emulated", "all")
    try:
        graph.start()
        op = Operator(graph)
        op.diagnostics = queue.Queue()
        op.node.create_subscription(DiagnosticArray, "/diagnostics",
                                    lambda m: [op.diagnostics.put(s) for s in m.status], qos_events())
        op.release_latch()
        yield graph, op
    finally:
        graph.shutdown()
        context.try_shutdown()


def driver(graph, name: str):
    return next(d for d in graph.drivers if d.get_name() == name)


def diagnostic(op, node: str, timeout: float = 3.0, where=lambda s: True):
    """The next /diagnostics status of ``node`` for which ``where`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = op.diagnostics.get(timeout=0.1)
        except queue.Empty:
            continue
        if status.name == node and where(status):
            return status
    raise AssertionError(f"no /diagnostics status of {node} within {timeout} s")


def recover(op, node: str):
    from std_srvs.srv import Trigger

    client = op.node.create_client(Trigger, f"/{node}/recover")
    try:
        return op.call(client, timeout=15.0)
    finally:
        op.node.destroy_client(client)


def episode_end(op, number: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            end = op.ends.get(timeout=0.1)
        except queue.Empty:
            continue
        if end["episode"] == number:
            return end
    raise AssertionError(f"episode {number} did not end within {timeout} s")


def start(op) -> int:
    import re

    return int(re.search(r"episode (\d+)", op.start_episode()).group(1))


def test_an_episode_runs_on_the_emulated_devices(cell):
    graph, op = cell
    number = start(op)
    end = episode_end(op, number)
    assert end["reason"] == "done", end
    assert graph.emulated.xarm["thrower"].servo_count > 100  # the arms were streamed servo targets over TCP
    assert graph.tracker.published > 0, "the D435 driver saw the object in the twin's rendered frames"
    for node in graph.drivers:
        assert node.device.state is Lifecycle.ACTIVE and node.state is not NodeState.FAULT, node.detail


def test_xarm_collision_faults_the_arm_the_policy_stops_and_recover_brings_it_back(cell):
    graph, op = cell
    arm = driver(graph, "thrower_arm_driver")
    emulator = graph.emulated.xarm["thrower"]
    number = start(op)
    wait_for(lambda: arm.state is NodeState.RUNNING, 5.0, "the thrower arm to follow the episode's commands")
    emulator.inject_error(31)  # collision: the controller stops and reports error 31 on every reply
    wait_for(lambda: arm.state is NodeState.FAULT, 2.0, "the thrower arm driver to report the fault")
    assert arm.device.state is Lifecycle.FAULT
    assert arm.detail.startswith("xarm/thrower/arm in FAULT: ")
    assert "controller error 31: Collision Caused Abnormal Current" in arm.detail
    end = episode_end(op, number)
    assert end["reason"] == "fault" and "thrower" in end["detail"], end  # the policy ended the episode
    sent = emulator.servo_count
    time.sleep(0.3)
    assert emulator.servo_count == sent, "no servo target reaches the controller after the fault"
    status = diagnostic(op, "thrower_arm_driver", where=lambda s: s.level == s.ERROR)
    values = {kv.key: kv.value for kv in status.values}
    assert "xarm/thrower/arm in FAULT: " in status.message and "controller error 31: Collision" in status.message
    assert values["controller_error"].startswith("error 31: Collision Caused Abnormal Current")
    assert values["device"] == "xarm/thrower/arm" and values["device_lifecycle"] == "fault"
    # the documented recovery: remove the cause (here: nothing to remove), then ~/recover
    res = recover(op, "thrower_arm_driver")
    assert res.success, res.message
    assert arm.state is NodeState.HOLDING and arm.device.state is Lifecycle.ACTIVE and emulator.error == 0
    number = start(op)
    assert episode_end(op, number)["reason"] == "done"


def test_allegro_over_temperature_faults_the_hand_recovery_waits_for_it_to_cool(cell):
    graph, op = cell
    hand = driver(graph, "catcher_hand_driver")
    emulator = graph.emulated.allegro["catcher"]
    emulator.set_over_temperature(True)
    wait_for(lambda: hand.state is NodeState.FAULT, 2.0, "the catcher hand driver to report the fault")
    assert hand.detail.startswith("allegro/catcher/hand in FAULT: virtual:")
    assert "status bit 0x02 'high temperature fault'" in hand.detail
    status = diagnostic(op, "catcher_hand_driver", where=lambda s: s.level == s.ERROR)
    values = {kv.key: kv.value for kv in status.values}
    assert "high temperature fault" in values["hand_status"] and values["device"] == "allegro/catcher/hand"
    assert driver(graph, "thrower_hand_driver").state is not NodeState.FAULT  # the right device, only
    res = recover(op, "catcher_hand_driver")  # still hot: refused with the vendor's words
    assert not res.success and "high temperature fault" in res.message
    assert hand.state is NodeState.FAULT
    emulator.set_over_temperature(False)
    res = recover(op, "catcher_hand_driver")
    assert res.success, res.message
    assert hand.state is NodeState.HOLDING and hand.device.state is Lifecycle.ACTIVE
    number = start(op)
    assert episode_end(op, number)["reason"] == "done"
