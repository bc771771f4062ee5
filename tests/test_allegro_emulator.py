"""The emulated Allegro Hand V4 firmware (handover.drivers.allegro.emulator), on its own and on the twin.

On its own: a bare python-can bus plays the PC and checks the protocol the emulator speaks (replies,
streaming at the set period, torque frames moving the motor model, servo on/off) and its fault
injection (silent bus, lost frames, status bits). On the MuJoCo twin: the real driver, over CAN,
through the emulator's motors, moves the twin's fingers by name. Units: rad, s.
"""

from __future__ import annotations

import itertools
import math
import os
import time

import numpy as np
import pytest

can = pytest.importorskip("can", reason="python-can is not installed (pip install 'handover[hardware]')")

from handover.drivers.allegro import AllegroConfig, AllegroEmulator, AllegroHand, EmulatedHand, IdealJoints, MotorModel
from handover.drivers.allegro import allegro_joint_index
from handover.drivers.allegro import protocol as proto
from handover.drivers.device import Lifecycle
from handover.runtime.cell_config import load_cell_config

CELL = load_cell_config()
_channels = itertools.count()
ALLEGRO_ORDER = [f"joint_{k}.0" for k in range(16)]


class PC:
    """The PC end of a virtual bus: sends commands, collects what the hand says."""

    def __init__(self, channel: str):
        self.bus = can.Bus(interface="virtual", channel=channel)

    def send(self, command: int, data: bytes = b"", remote: bool = False) -> None:
        self.bus.send(can.Message(arbitration_id=proto.can_id(command, 0), is_extended_id=False,
                                  is_remote_frame=remote, data=None if remote else data, dlc=0 if remote else len(data)))

    def frames(self, wait_s: float = 0.0) -> list[tuple[int, bytes]]:
        """(command, data) of every frame received, waiting up to ``wait_s`` for the first."""
        out = []
        msg = self.bus.recv(timeout=wait_s)
        while msg is not None:
            out.append((proto.split_id(msg.arbitration_id)[0], bytes(msg.data)))
            msg = self.bus.recv(timeout=0.0)
        return out

    def settle(self) -> None:
        """Give the emulator's receive thread time to act on what was sent."""
        time.sleep(0.02)


@pytest.fixture
def hand():
    """An emulator on ideal joints (Allegro numbering: backend index k is joint_k.0) and a PC bus."""
    channel = f"allegro-emu-{os.getpid()}-{next(_channels)}"
    joints = IdealJoints(np.linspace(-0.2, 1.0, 16))
    emulator = AllegroEmulator(joints, allegro_joint_index(ALLEGRO_ORDER), {"interface": "virtual", "channel": channel},
                               advance_backend=joints.advance_to, hand=EmulatedHand(hand_side="left", serial="SAH040L7"))
    emulator.open()
    pc = PC(channel)
    yield emulator, joints, pc
    pc.bus.shutdown()
    emulator.close()


def test_answers_info_and_serial_requests(hand):
    emulator, _, pc = hand
    pc.send(proto.CMD_HAND_INFO, remote=True)
    pc.send(proto.CMD_SERIAL, remote=True)
    replies = dict(pc.frames(wait_s=1.0) + pc.frames(wait_s=0.2))
    info = proto.HandInfo.decode(replies[proto.CMD_HAND_INFO])
    assert info.hardware_version >> 8 == 4 and info.side == "left" and info.status == 0
    assert info.temperature_c == 35
    assert replies[proto.CMD_SERIAL] == b"SAH040L7"
    pc.send(proto.CMD_SYSTEM_ON)
    pc.settle()
    pc.send(proto.CMD_HAND_INFO, remote=True)
    assert proto.HandInfo.decode(dict(pc.frames(wait_s=1.0))[proto.CMD_HAND_INFO]).servo_on


def test_streams_positions_at_the_set_period(hand):
    """Set period {3, 0, 0}: a first cycle at once, then four finger frames every 3 ms (lock-step),
    carrying the joints' positions to one encoder count; period 0 stops the stream."""
    emulator, joints, pc = hand
    pc.send(proto.CMD_SET_PERIOD, proto.encode_period(3, 0, 0))
    pc.settle()
    assert [c for c, _ in pc.frames()] == [0x20, 0x21, 0x22, 0x23]
    emulator.step(0.3)
    frames = pc.frames(wait_s=0.1)
    assert [c for c, _ in frames] == [0x20, 0x21, 0x22, 0x23] * 100
    position = np.concatenate([proto.decode_positions(d) for _, d in frames[-4:]])
    np.testing.assert_allclose(position, joints.position, atol=proto.RAD_PER_COUNT)
    pc.send(proto.CMD_SET_PERIOD, proto.encode_period(0, 0, 0))
    pc.settle()
    emulator.step(0.1)
    assert pc.frames(wait_s=0.05) == []


def test_answers_position_and_temperature_requests(hand):
    _, joints, pc = hand
    pc.send(proto.CMD_POSITION + 2, remote=True)
    pc.send(proto.CMD_TEMPERATURE + 1, remote=True)
    replies = dict(pc.frames(wait_s=1.0) + pc.frames(wait_s=0.2))
    np.testing.assert_allclose(proto.decode_positions(replies[0x22]), joints.position[8:12], atol=proto.RAD_PER_COUNT)
    assert int.from_bytes(replies[proto.CMD_TEMPERATURE + 1], "little", signed=True) == 35


def test_torque_frames_drive_the_motor_model_only_with_the_servo_on(hand):
    """PWM 600 (50 % duty) on joint_1.0 (finger 0, joint 1): it moves as the motor model says
    (6 rad/s x 0.5, 20 ms time constant); with the system off the same frame moves nothing."""
    emulator, joints, pc = hand
    start = joints.position.copy()
    pc.send(proto.CMD_SET_TORQUE, proto.encode_pwm([0, 600, 0, 0]))
    pc.settle()
    emulator.step(0.1)
    np.testing.assert_array_equal(joints.position, start)  # servo off: the motors are not driven
    pc.send(proto.CMD_SYSTEM_ON)
    pc.settle()
    pc.send(proto.CMD_SET_TORQUE, proto.encode_pwm([0, 600, 0, 0]))
    pc.settle()
    emulator.step(0.1)
    motor = MotorModel()
    expected = 3.0 * 0.1 - 3.0 * motor.time_constant * (1 - math.exp(-0.1 / motor.time_constant))
    moved = joints.position - start
    assert moved[1] == pytest.approx(expected, rel=1e-9)
    assert np.count_nonzero(moved) == 1
    pc.send(proto.CMD_SYSTEM_OFF)
    pc.settle()
    before = joints.position.copy()
    emulator.step(0.2)
    assert abs(joints.position[1] - before[1]) < 0.07  # coasts to a stop within a few time constants


def test_motor_model_is_the_exact_first_order_response():
    motor = MotorModel(max_speed=5.0, time_constant=0.05)
    q, v = np.zeros(1), np.zeros(1)
    fine_q, fine_v = 0.0, 0.0
    for _ in range(10):
        q, v = motor.step(q, v, np.array([0.4]), 0.003)
    for _ in range(30_000):  # Euler at 1 us
        fine_v += (5.0 * 0.4 - fine_v) / 0.05 * 1e-6
        fine_q += fine_v * 1e-6
    assert q[0] == pytest.approx(fine_q, rel=1e-3) and v[0] == pytest.approx(fine_v, rel=1e-3)
    with pytest.raises(ValueError, match="time_constant"):
        MotorModel(time_constant=0.0)


def test_fault_injection_silent_lost_frames_status_bits(hand):
    emulator, _, pc = hand
    pc.send(proto.CMD_SET_PERIOD, proto.encode_period(3, 0, 0))
    pc.settle()
    pc.frames()
    emulator.lose_frames(1.0, fingers=[1])
    emulator.step(0.03)
    assert sorted({c for c, _ in pc.frames(wait_s=0.1)}) == [0x20, 0x22, 0x23]
    assert emulator.frames_dropped == 10
    emulator.lose_frames(0.0)
    emulator.set_silent(True)
    pc.send(proto.CMD_HAND_INFO, remote=True)
    emulator.step(0.03)
    assert pc.frames(wait_s=0.1) == []
    emulator.set_silent(False)
    emulator.set_over_temperature(True, temperature_c=77)
    emulator.set_status_bits(emulator.extra_status | proto.STATUS_INTERNAL_COMM_FAULT)
    pc.send(proto.CMD_HAND_INFO, remote=True)
    replies = [d for c, d in pc.frames(wait_s=1.0) if c == proto.CMD_HAND_INFO]
    info = proto.HandInfo.decode(replies[0])
    assert info.temperature_c == 77 and info.status & 0x02 and info.status & 0x04
    assert proto.describe_status(info.status) == "0x06: high temperature fault, internal communication fault"
    with pytest.raises(ValueError):
        emulator.lose_frames(1.5)


def test_joint_index_by_name():
    names = [f"catcher/joint_{k}.0" for k in (0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7, 8, 9, 10, 11)]
    index = allegro_joint_index(["x/joint1"] + names, prefix="catcher/")
    assert list(index[[0, 4, 12]]) == [1, 9, 5]
    with pytest.raises(ValueError, match=r"no joint 'catcher/joint_11\.0' \(joint_11\.0 \(ring joint 3\)\)"):
        allegro_joint_index(names[:-1] + ["catcher/joint_99.0"], prefix="catcher/")


def test_the_driver_moves_the_twins_fingers_through_the_emulator():
    """The real driver, over CAN, through the emulated firmware and motors, on the MuJoCo twin: the
    thumb (joint_12.0 .. joint_15.0 of the catcher) goes where it is commanded by name, the twin's
    own joints get there, and the stamps are the twin's time."""
    twin_mod = pytest.importorskip("handover.sim_twin.twin")
    twin = twin_mod.Twin(CELL)
    twin.set_object_state(np.array([1.5, 1.5, 0.05]), np.zeros(3))
    channel = f"allegro-twin-{os.getpid()}-{next(_channels)}"
    index = allegro_joint_index(CELL.joint_names, prefix="catcher/")
    emulator = AllegroEmulator(twin, index, {"interface": "virtual", "channel": channel},
                               advance_backend=lambda t: twin.advance(max(0.0, t - twin.time)),
                               hand=EmulatedHand(hand_side="left")).open()
    dev = AllegroHand.from_cell(CELL, "catcher", AllegroConfig(interface="virtual", channel=channel, hand_side="left"),
                                clock=emulator.now)
    try:
        dev.configure()
        dev.activate()
        names = list(dev.info.names)
        start = dev.read(emulator.now()).position
        lower, upper = np.array(CELL.catcher.hand.lower), np.array(CELL.catcher.hand.upper)
        target = np.clip(start, lower, upper)
        thumb = [names.index(f"catcher/joint_{k}.0") for k in (12, 13, 14, 15)]
        target[thumb] = lower[thumb] + 0.6 * (upper[thumb] - lower[thumb])
        for _ in range(20):
            emulator.step(0.05)
            dev.command_by_name(names[::-1], target[::-1], emulator.now())
        emulator.step(2.0)
        state = dev.read(emulator.now())
        assert dev.state is Lifecycle.ACTIVE
        assert state.stamp <= emulator.now() and emulator.now() - state.stamp < 0.003 + 1e-9
        np.testing.assert_allclose(state.position[thumb], target[thumb], atol=0.02)
        measured = twin.read_joints(index).position  # the twin itself, Allegro numbering
        np.testing.assert_allclose(measured[12:16], target[thumb], atol=0.02)
    finally:
        dev.close()
        emulator.close()
