"""The emulated xArm controller (handover.drivers.xarm.emulator) as the unmodified xarm-python-sdk
sees it: the connect sequence, the three report ports, servo streaming into a joint backend, the
error/recovery semantics, the feedback protocol, fault injection; two controllers on 127.0.0.2 and
127.0.0.3 driving one MuJoCo twin through two drivers; and the standalone command. Units: rad, s."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("xarm", reason="xarm-python-sdk is not installed")

from xarm.wrapper import XArmAPI  # noqa: E402

from handover.drivers.xarm import XArmConfig, XArmJointGroup  # noqa: E402
from handover.drivers.xarm.emulator import XArmEmulator  # noqa: E402
from handover.drivers.xarm.joint_backends import LockedBackend, RateLimitedJoints, RealTimeStepper  # noqa: E402
from handover.drivers.xarm.testing import loopback_address, port_502_problem  # noqa: E402
from handover.runtime.cell_config import load_cell_config  # noqa: E402
from support import wait_for  # noqa: E402

CFG = load_cell_config()
HOME = np.array(CFG.thrower.arm.default)
_PROBLEM = port_502_problem()
pytestmark = pytest.mark.skipif(bool(_PROBLEM), reason=_PROBLEM)


@pytest.fixture
def emulated():
    """(emulator, backend, connect) where ``connect(**kwargs)`` opens the SDK on it."""
    backend = RateLimitedJoints(HOME)
    emu = XArmEmulator(backend, address=loopback_address(), report_hz=20.0).start()
    arms = []

    def connect(**kwargs):
        arm = XArmAPI(emu.address, is_radian=True, forbid_uds=True, **kwargs)
        arms.append(arm)
        return arm

    yield emu, backend, connect
    for arm in arms:
        arm.disconnect()
    emu.close()


def test_the_sdk_connects_and_parses_the_version(emulated):
    emu, _, connect = emulated
    arm = connect()
    assert arm.connected and arm.version_number == (2, 6, 0) and arm.axis == 6 and arm.device_type == 6
    assert arm.arm.arm_cmd.get_protocol_identifier() == 3 or emu.calls  # switched once the report thread ran
    assert arm.get_state() == (0, 2) and arm.get_err_warn_code() == (0, [0, 0])
    code, angles = arm.get_servo_angle(is_radian=True)
    assert code == 0
    np.testing.assert_allclose(angles[:6], HOME, atol=1e-6)


@pytest.mark.parametrize("report_type", ["rich", "normal", "real"])
def test_each_report_port_is_parsed_by_the_sdk(emulated, report_type):
    emu, backend, connect = emulated
    arm = connect(report_type=report_type)
    wait_for(lambda: arm.arm.reported, what="the report socket")
    assert arm.motion_enable(True) == 0 and arm.set_mode(1) == 0 and arm.set_state(0) == 0
    wait_for(lambda: arm.mode == 1, what="the reported mode")
    np.testing.assert_allclose(arm.angles[:6], HOME, atol=1e-5)
    if report_type != "real":  # the real-time report has no error fields
        emu.inject_error(31)
        wait_for(lambda: arm.error_code == 31 and arm.state == 4, what="the reported error")


def test_servo_streaming_moves_the_backend_and_only_in_servo_mode(emulated):
    emu, backend, connect = emulated
    arm = connect()
    goal = HOME.copy()
    goal[1] = 0.2
    assert arm.set_servo_angle_j(list(goal), is_radian=True) != 0, "refused before motion_enable"
    assert arm.motion_enable(True) == 0 and arm.set_mode(0) == 0 and arm.set_state(0) == 0
    assert arm.set_servo_angle_j(list(goal), is_radian=True) == 10, "refused outside servo mode (invalid)"
    assert arm.set_mode(1) == 0 and arm.set_state(0) == 0
    for _ in range(30):
        assert arm.set_servo_angle_j(list(goal), is_radian=True) == 0
        time.sleep(0.01)
    time.sleep(0.15)
    np.testing.assert_allclose(backend.read_joints(np.arange(6)).position, goal, atol=1e-6)
    code, (pos, vel, eff) = arm.get_joint_states(is_radian=True)
    assert code == 0 and len(pos) == len(vel) == len(eff) == 7
    np.testing.assert_allclose(pos[:6], goal, atol=1e-6)
    assert emu.state in (1, 2) and emu.servo_count == 30


def test_collision_error_stops_and_the_vendor_recovery_clears_it(emulated):
    emu, backend, connect = emulated
    arm = connect()
    arm.motion_enable(True), arm.set_mode(1), arm.set_state(0)
    emu.inject_error(31)
    assert arm.get_err_warn_code() == (0, [31, 0]) and arm.get_state() == (0, 4)
    assert arm.set_servo_angle_j(list(HOME), is_radian=True) == 1, "HAS_ERROR"
    assert arm.set_state(0) == 0 and arm.get_state() == (0, 4), "set_state(0) cannot clear an error"
    arm.clean_error()
    assert arm.get_err_warn_code() == (0, [0, 0]) and arm.get_state() == (0, 4)
    assert arm.set_servo_angle_j(list(HOME), is_radian=True) == 9, "still stopped and disabled: not ready"
    assert arm.motion_enable(True) == 0 and arm.set_mode(1) == 0 and arm.set_state(0) == 0
    assert arm.set_servo_angle_j(list(HOME), is_radian=True) == 0


def test_warning_and_clean_warn(emulated):
    emu, _, connect = emulated
    arm = connect()
    emu.inject_warning(11)
    assert arm.get_err_warn_code() == (0, [0, 11]) and arm.arm.arm_cmd.has_err_warn
    arm.clean_warn()
    assert arm.get_err_warn_code() == (0, [0, 0])


def test_set_collision_sensitivity_completes_through_the_feedback_protocol(emulated):
    """With firmware >= 2.0.102 the SDK waits for a motion-finished feedback frame first: answered."""
    emu, _, connect = emulated
    arm = connect()
    started = time.monotonic()
    assert arm.set_collision_sensitivity(2) == 0
    assert time.monotonic() - started < 2.0
    assert emu.collision_sensitivity == 2
    wait_for(lambda: arm.collision_sensitivity == 2, what="the reported sensitivity")


def test_stalled_replies_time_out_in_the_sdk_and_recover(emulated):
    emu, _, connect = emulated
    arm = connect()
    arm.set_timeout(0.2)
    emu.stall(0.6)
    started = time.monotonic()
    assert arm.get_state()[0] == 3, "RES_TIMEOUT"
    assert 0.18 < time.monotonic() - started < 0.5
    time.sleep(0.7)
    assert arm.get_state() == (0, 2), "late replies are discarded, new ones match"


def test_dropped_connection_disconnects_the_sdk(emulated):
    emu, _, connect = emulated
    arm = connect()
    emu.drop_connections()
    wait_for(lambda: not arm.connected, timeout=3.0, what="the SDK to notice")
    emu.refuse_connections()
    with pytest.raises(Exception, match="connect socket failed"):
        XArmAPI(emu.address, is_radian=True, forbid_uds=True)
    emu.refuse_connections(False)
    assert connect().connected


def test_two_arms_on_127_0_0_2_and_3_drive_one_twin():
    """Both arms of one MuJoCo twin (stepped in real time), each behind its own emulated controller
    and its own driver: targets reach the twin's joints, by name."""
    from handover.sim_twin.twin import Twin  # tests may use the twin; drivers/ may not

    twin = LockedBackend(Twin(CFG))
    emulators, devices = [], []
    with RealTimeStepper(twin):
        try:
            for side, preferred in (("thrower", "127.0.0.2"), ("catcher", "127.0.0.3")):
                index = np.array([CFG.joint_names.index(n) for n in getattr(CFG, side).arm.joints])
                emu = XArmEmulator(twin, index, address=loopback_address(preferred), report_hz=20.0).start()
                emulators.append(emu)
                dev = XArmJointGroup.from_cell_config(CFG, side, XArmConfig(address=emu.address, stream_rate_hz=100))
                devices.append(dev)
                dev.configure()
                dev.activate()
            goals = []
            for dev in devices:
                goal = dev.read(time.monotonic()).position.copy()
                goal[2] = np.clip(goal[2] - 0.1, dev.info.lower[2], dev.info.upper[2])  # joint3 by 0.1 rad
                goals.append(goal)
            for _ in range(10):
                for dev, goal in zip(devices, goals):
                    dev.command(goal, time.monotonic())
                time.sleep(CFG.control_period_s)
            time.sleep(1.0)
            for emu, dev, goal in zip(emulators, devices, goals):
                np.testing.assert_allclose(twin.read_joints(emu.index).position[2], goal[2], atol=0.02)
                np.testing.assert_allclose(dev.read(time.monotonic()).position[2], goal[2], atol=0.02)
        finally:
            for dev in devices:
                dev.close()
            for emu in emulators:
                emu.close()


def test_the_standalone_command_serves_the_sdk():
    address = loopback_address()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "handover.drivers.xarm.emulator", "--address", address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert any(f"thrower arm on {address}:502" in line for line in lines), lines
        arm = XArmAPI(address, is_radian=True, forbid_uds=True)
        try:
            assert arm.connected and arm.axis == 6
            np.testing.assert_allclose(arm.get_servo_angle(is_radian=True)[1][:6], HOME, atol=1e-6)
            proc.stdin.write("collision\n")
            proc.stdin.flush()
            wait_for(lambda: arm.get_err_warn_code()[1][0] == 31, what="the injected collision")
        finally:
            arm.disconnect()
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
