"""The Allegro Hand V4 CAN protocol: identifiers, frame layouts, units and status bits.

Shared by the driver (the PC side) and the emulator (the hand's firmware side). Facts from
``../shared/reference/robot-cell.md`` ("Allegro Hand V4 over CAN") and the vendor's own drivers
(Wonik Robotics ``allegro_hand_ros_v4``: ``AllegroHandDrv.cpp`` for the start-up/shut-down
sequence, the hand-info layout and its status words; ``allegro_hand_ros2`` ``v4_sdk.cpp`` for the
newer shut-down with "system off").

Wire facts
- 1 Mbit/s, 11-bit standard identifiers: ``arbitration_id = (command << 2) | device_id``
  (device id 0..3); on receive ``command = id >> 2``.
- Requests (hand info, serial, finger position, temperature) are remote (RTR) frames without data;
  the hand answers with a data frame on the same identifier. System on/off are data frames of
  length 0; set period and set torque carry data.
- Fingers on the bus: index 0, middle 1, ring 2, thumb 3; each finger's frame carries its joints
  0..3, so bus finger ``f`` joint ``j`` is Allegro joint ``4 f + j``, named ``joint_{4f+j}.0``.
  Runtime joint groups list the hand in another order: always map by name (:func:`allegro_number`).
- Position frame: four little-endian int16, ``rad = raw * RAD_PER_COUNT``.
- Torque frame: four little-endian int16 PWM duties (-1200..1200 = -100..100 %).
- Set period: three little-endian uint16, milliseconds, {position, imu, temperature}; 0 = off.
- Hand info reply: bytes 0-1 hardware version (LE; high byte 4 on a V4), 2-3 firmware version,
  4 hand type (0 right, 1 left), 5 temperature (deg C), 6 status bits (:data:`STATUS_BITS`).
- Serial reply: eight ASCII characters.
- Temperature reply (finger f): int32 little-endian deg C (as ``AllegroHandDrv.cpp`` parses it).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

# -- commands (the value shifted left by 2 in the arbitration id) -----------------------------------

CMD_SYSTEM_ON = 0x40
CMD_SYSTEM_OFF = 0x41
CMD_SET_TORQUE = 0x60  # + finger 0..3
CMD_POSITION = 0x20  # + finger 0..3: RTR request, and the streamed/answered data frames
CMD_IMU = 0x30
CMD_TEMPERATURE = 0x38  # + finger 0..3
CMD_HAND_INFO = 0x80
CMD_SET_PERIOD = 0x81
CMD_SERIAL = 0x88

FINGERS = ("index", "middle", "ring", "thumb")  # bus finger order, 0..3
JOINTS_PER_FINGER = 4
DOF = 16

# rad per encoder count: raw * (333.3 / 65536) degrees
RAD_PER_COUNT = (333.3 / 65536.0) * math.pi / 180.0
PWM_FULL_SCALE = 1200  # |PWM| = 1200 is 100 % duty on a V4 (12 V)

# Status bits of the hand-info reply, with the vendor's own words (AllegroHandDrv.cpp prints them).
STATUS_SERVO_ON = 0x01
STATUS_OVER_TEMPERATURE = 0x02
STATUS_INTERNAL_COMM_FAULT = 0x04
STATUS_BITS = {
    STATUS_SERVO_ON: "servo status ON",
    STATUS_OVER_TEMPERATURE: "high temperature fault",
    STATUS_INTERNAL_COMM_FAULT: "internal communication fault",
}
FAULT_BITS = STATUS_OVER_TEMPERATURE | STATUS_INTERNAL_COMM_FAULT

_JOINT_NAME = re.compile(r"^joint_(\d+)\.0$")


def can_id(command: int, device_id: int) -> int:
    """The 11-bit arbitration id of ``command`` for hand ``device_id`` (0..3)."""
    return ((command << 2) | device_id) & 0x7FF


def split_id(arbitration_id: int) -> tuple[int, int]:
    """``(command, device_id)`` of a received arbitration id."""
    return arbitration_id >> 2, arbitration_id & 0x3


def allegro_number(joint_name: str) -> int:
    """The Allegro joint number 0..15 of a joint name: ``joint_4.0`` or ``thrower/joint_4.0`` -> 4.
    Raises ``ValueError`` naming the joint if it is not an Allegro joint name."""
    leaf = joint_name.rsplit("/", 1)[-1]
    match = _JOINT_NAME.match(leaf)
    if match is None or not 0 <= int(match.group(1)) < DOF:
        raise ValueError(f"{joint_name!r} is not an Allegro joint name (joint_0.0 ... joint_15.0)")
    return int(match.group(1))


def joint_label(number: int) -> str:
    """``joint_5.0 (middle joint 1)`` for Allegro joint 5: for messages."""
    return f"joint_{number}.0 ({FINGERS[number // 4]} joint {number % 4})"


def encode_positions(radians) -> bytes:
    """Four joint angles (rad) -> a position frame's 8 bytes (int16 counts, saturated)."""
    counts = np.clip(np.round(np.asarray(radians, dtype=np.float64) / RAD_PER_COUNT), -32768, 32767)
    return counts.astype("<i2").tobytes()


def encode_hand_positions(radians) -> list[bytes]:
    """Sixteen joint angles (rad, Allegro numbering) -> the four finger frames' payloads."""
    counts = np.clip(np.round(np.asarray(radians, dtype=np.float64) / RAD_PER_COUNT), -32768, 32767)
    rows = counts.astype("<i2").reshape(4, 4)
    return [rows[f].tobytes() for f in range(4)]


def decode_positions(data: bytes) -> np.ndarray:
    """A position frame's 8 bytes -> four joint angles (rad)."""
    return np.frombuffer(bytes(data[:8]), dtype="<i2") * RAD_PER_COUNT


def encode_pwm(pwm) -> bytes:
    """Four PWM duties (int, -1200..1200) -> a torque frame's 8 bytes."""
    return np.asarray(pwm).astype("<i2").tobytes()


def decode_pwm(data: bytes) -> tuple[int, int, int, int]:
    return struct.unpack("<4h", bytes(data[:8]))  # type: ignore[return-value]


def encode_period(position_ms: int, imu_ms: int = 0, temperature_ms: int = 0) -> bytes:
    """Set-period payload: three uint16 LE milliseconds; 0 turns a stream off."""
    return struct.pack("<3H", position_ms, imu_ms, temperature_ms)


def decode_period(data: bytes) -> tuple[int, int, int]:
    padded = bytes(data[:6]).ljust(6, b"\0")
    return struct.unpack("<3H", padded)  # type: ignore[return-value]


@dataclass(frozen=True)
class HandInfo:
    """The hand-info reply (command 0x80). ``hand_type`` 0 right, 1 left; temperature deg C."""

    hardware_version: int
    firmware_version: int
    hand_type: int
    temperature_c: int
    status: int

    @property
    def side(self) -> str:
        return "left" if self.hand_type == 1 else "right"

    @property
    def servo_on(self) -> bool:
        return bool(self.status & STATUS_SERVO_ON)

    def encode(self) -> bytes:
        return struct.pack("<HHBBBx", self.hardware_version, self.firmware_version, self.hand_type,
                           self.temperature_c & 0xFF, self.status & 0xFF)

    @staticmethod
    def decode(data: bytes) -> "HandInfo":
        padded = bytes(data[:8]).ljust(8, b"\0")
        hw, fw, hand_type, temperature, status = struct.unpack("<HHBBBx", padded)
        return HandInfo(hw, fw, hand_type, temperature, status)


def describe_status(status: int) -> str:
    """``0x03: servo status ON, high temperature fault`` (the vendor's words per bit)."""
    words = [text for bit, text in STATUS_BITS.items() if status & bit]
    return f"0x{status:02x}: " + (", ".join(words) if words else "servo status OFF")


def fault_bits_message(status: int) -> Optional[str]:
    """The fault bits set in ``status``, each named with its bit and the vendor's meaning, or None."""
    set_bits = [bit for bit in (STATUS_OVER_TEMPERATURE, STATUS_INTERNAL_COMM_FAULT) if status & bit]
    if not set_bits:
        return None
    return "; ".join(f"status bit 0x{bit:02x} '{STATUS_BITS[bit]}'" for bit in set_bits)
