"""The xArm controller's TCP wire format, as the emulator speaks it (the SDK side is the vendor's).

Command port 502 (Modbus-TCP-like private protocol; ``../shared/reference/device-protocols.md``):
- request: transaction id u16, protocol id u16 (2, or 3 once the SDK saw firmware >= 1.8.6),
  length u16 (= 1 + payload), function code u8, payload;
- reply: the same transaction and protocol id, length (= 2 + payload), function code, a status
  byte (:data:`STATUS_ERROR` / :data:`STATUS_WARN` / :data:`STATUS_NOT_READY` /
  :data:`STATUS_INVALID`), payload.
- Integers are big-endian, floats float32 little-endian; joint values are radians.

Report ports (u32 big-endian total length first, then fixed fields): normal 30001 (145 bytes), rich
30002 (587 bytes), real 30003 (135 bytes, no error fields). Offsets are those the SDK parses
(``xarm/x3/base.py`` ``_handle_report_data``, ``xarm/x3/report.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

COMMAND_PORT = 502
REPORT_PORTS = {"normal": 30001, "rich": 30002, "real": 30003}
REPORT_SIZES = {"normal": 145, "rich": 587, "real": 135}

# Function codes (the SDK's XCONF.UxbusReg).
GET_VERSION = 1
GET_ROBOT_SN = 2
MOTION_EN = 11
SET_STATE = 12
GET_STATE = 13
GET_CMDNUM = 14
GET_ERROR = 15
CLEAN_ERR = 16
CLEAN_WAR = 17
SET_MODE = 19
MOVE_SERVOJ = 29
SET_COLLIS_SENS = 37
SET_TEACH_SENS = 38
GET_TCP_POSE = 41
GET_JOINT_POS = 42
FEEDBACK_CHECK = 253
SET_FEEDBACK_TYPE = 254
FEEDBACK = 0xFF  # unsolicited frames from the controller (motion feedback)

STATUS_ERROR = 0x40
STATUS_WARN = 0x20
STATUS_NOT_READY = 0x10
STATUS_INVALID = 0x08

HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, function code


@dataclass(frozen=True)
class Request:
    trans_id: int
    prot_id: int
    func: int
    payload: bytes


def split_frames(buffer: bytes) -> tuple[list[Request], bytes]:
    """Complete requests at the start of ``buffer`` and the unparsed rest."""
    frames = []
    while len(buffer) >= HEADER.size:
        trans_id, prot_id, length, func = HEADER.unpack_from(buffer)
        end = 6 + length
        if length < 1 or len(buffer) < end:
            break
        frames.append(Request(trans_id, prot_id, func, bytes(buffer[HEADER.size:end])))
        buffer = buffer[end:]
    return frames, buffer


def reply(req: Request, status: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHBB", req.trans_id, req.prot_id, len(payload) + 2, req.func, status) + payload


def feedback_frame(req: Request, feedback_type: int, code: int = 0) -> bytes:
    """An unsolicited feedback frame for request ``req`` (the SDK reads the type at byte 8 and the
    result code at byte 12, and routes frames with function code 0xFF to its feedback queue)."""
    body = bytes([0, feedback_type, 0, 0, 0, code, 0, 0])
    return struct.pack(">HHHB", req.trans_id, req.prot_id, len(body) + 1, FEEDBACK) + body


def f32(values) -> bytes:
    values = [float(v) for v in values]
    return struct.pack(f"<{len(values)}f", *values)


def parse_f32(payload: bytes, n: int) -> list[float]:
    return list(struct.unpack_from(f"<{n}f", payload))


def padded_ascii(text: str, size: int) -> bytes:
    raw = text.encode("ascii")[: size - 1]
    return raw + b"\0" * (size - len(raw))


@dataclass
class ReportData:
    """What one report says (the emulator fills it from its controller state). Angles rad."""

    state: int
    mode: int
    angles: list  # 7, rad
    torques: list  # 7, N*m
    speeds: list  # 7, rad/s
    error: int = 0
    warn: int = 0
    enabled_mask: int = 0  # bit i: motor i+1 enabled
    collision_sensitivity: int = 3
    teach_sensitivity: int = 3
    robot_type: int = 6
    axis: int = 6
    version: str = ""
    cmd_num: int = 0
    counter: int = 0
    temperatures: list = field(default_factory=lambda: [30] * 7)


def build_report(kind: str, d: ReportData) -> bytes:
    """One report packet of ``kind`` ('normal', 'rich', 'real'), length prefix included."""
    size = REPORT_SIZES[kind]
    b = bytearray(size)
    struct.pack_into(">I", b, 0, size)
    b[4] = (d.state & 0x0F) | ((d.mode & 0x0F) << 4)
    struct.pack_into(">H", b, 5, d.cmd_num)
    b[7:35] = f32(d.angles)
    b[35:59] = f32([0.0] * 6)  # TCP pose: not emulated (no forward kinematics here)
    b[59:87] = f32(d.torques)
    if kind == "real":
        return bytes(b)  # 87..135: force-torque sensor, zero
    b[87] = d.enabled_mask  # brake released where enabled
    b[88] = d.enabled_mask
    b[89] = d.error & 0xFF
    b[90] = d.warn & 0xFF
    b[115:131] = f32([0.0, 0.0, 0.0, 0.0])  # TCP payload
    b[131] = d.collision_sensitivity
    b[132] = d.teach_sensitivity
    b[133:145] = f32([0.0, 0.0, -1.0])  # gravity direction
    if kind == "normal":
        return bytes(b)
    b[145:151] = bytes([d.robot_type, d.axis, 0, 0, 0, 0])
    b[151:181] = padded_ascii(d.version, 30)
    b[181:201] = f32([1000.0, 1.0, 50000.0, 0.1, 1000.0])  # TCP jerk, acc min/max, speed min/max
    b[201:221] = f32([20.0, 0.01, 20.0, 0.0001, 3.14159])  # joint jerk, acc min/max, speed min/max
    b[221:229] = f32([2.3, 2.7])
    b[245:252] = bytes(t & 0xFF for t in d.temperatures)
    b[252:284] = f32([0.0, *d.speeds])
    struct.pack_into(">I", b, 284, d.counter)
    b[341:355] = struct.pack(">7H", *([4800] * 7))  # 48.00 V
    return bytes(b)
