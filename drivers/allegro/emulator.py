"""An Allegro Hand V4's firmware on a python-can bus, moving a joint backend (the twin, or ideal joints).

The other end of :mod:`handover.drivers.allegro.driver`'s protocol (:mod:`~handover.drivers.allegro.protocol`):
it answers the hand-info, serial, position and temperature requests (RTR), obeys system on/off and
set period, streams the four finger position frames every position period (from the first period
on: the first cycle goes out as soon as the period is set), and applies the torque frames.

Physics: the emulation model
    The real hand is torque (PWM) controlled by the PC; the twin's hand joints are PD position
    actuators. The emulator puts a per-joint **geared DC motor** between the two (:class:`MotorModel`):
    the PWM duty ``u = pwm / 1200`` (0 while the servo is off) drives the joint velocity toward
    ``max_speed * u`` with the mechanical time constant ``time_constant``
    (``dv/dt = (max_speed u - v) / time_constant``, integrated exactly per step). The motor's
    position is sent to the backend as its position target each step (``set_targets``), and the
    position frames carry what the backend measures (``read_joints``): the twin's fingers follow the
    motors through its own PD and contacts, and the PC's PD loop closes over the twin's measured
    positions. With ideal joints (:class:`IdealJoints`) the measured position is the motor's.
    Why: an Allegro joint is a small DC motor behind a ~1:370 gear; back-EMF and reflected inertia
    dominate, so at a given duty it runs at a nearly constant speed -- the first-order velocity
    response captures what the PC's PD loop sees (its gains and PWM limits then set speeds and
    settling as on the hardware) without a torque model the twin's position actuators could not
    take. Not modelled: gravity, friction, stiction, back-driving by contacts (a blocked twin finger
    does not stall the motor model; the twin's actuator effort limit bounds the push).

Clocks and modes
- Lock-step (tests): :meth:`AllegroEmulator.step` advances the emulator's own clock (:meth:`now`, s)
  by whole position periods; each period it moves the model, optionally advances the backend
  (``advance_backend(t)``: bring it to the emulator's time ``t``), sends the four position frames and waits (wall
  time, at most ``reply_wait_s``) for the driver's four torque frames, so the driver runs as fast as
  the CPU allows and deterministically per period. Give the driver ``clock=emulator.now``.
- Real time: :meth:`AllegroEmulator.start_streaming` runs a thread on ``time.monotonic`` that does
  the same each period without waiting (frames that come late act in the next period, as on a bus).
  The backend is then read and written from that thread (and from the receive thread, for position
  requests): wrap a backend that another thread steps in :class:`LockedBackend`.

Fault injection (any time): :meth:`lose_frames` (position frames dropped at random, per finger),
:meth:`set_silent` (the hand neither sends nor hears: an unplugged cable), :meth:`set_over_temperature`
(status bit 0x02 "high temperature fault" and a high temperature in the hand-info reply),
:meth:`set_status_bits` (any bits, e.g. 0x04 "internal communication fault").

Joint indices: ``joint_index[k]`` is the backend index of Allegro joint ``k`` (joint_k.0); build it by
name with :func:`allegro_joint_index`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import can
import numpy as np

from handover.drivers.allegro import protocol as proto


class JointBackend(Protocol):
    """What the emulator needs of the joints it moves (``handover.sim_twin.twin.Twin`` is one)."""

    @property
    def time(self) -> float: ...

    def read_joints(self, index: np.ndarray):
        """An object with ``position`` (rad) of those joints."""
        ...

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        """Position targets (rad) of those joints."""
        ...


@dataclass(frozen=True)
class MotorModel:
    """One joint's geared DC motor (see the module doc). ``max_speed``: joint speed at 100 % duty,
    rad/s; ``time_constant``: mechanical time constant, s. Defaults: our estimate of the V4's order of
    magnitude (not a vendor figure): with the vendor's gains, a joint settles in ~1 s."""

    max_speed: float = 6.0
    time_constant: float = 0.02

    def __post_init__(self) -> None:
        for name in ("max_speed", "time_constant"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"MotorModel.{name} must be a finite number > 0, got {value!r}")

    def step(self, q: np.ndarray, v: np.ndarray, duty: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions (rad) and velocities (rad/s) after ``dt`` s at constant ``duty`` (-1..1)."""
        v_end = self.max_speed * duty
        decay = math.exp(-dt / self.time_constant)
        q = q + v_end * dt + (v - v_end) * self.time_constant * (1.0 - decay)
        v = v_end + (v - v_end) * decay
        return q, v


class IdealJoints:
    """A joint backend whose measured positions are its targets (clamped to ``lower``/``upper``,
    rad, if given); ``time`` (s) moves with :meth:`advance_to`."""

    def __init__(self, initial: Sequence[float], lower: Optional[Sequence[float]] = None,
                 upper: Optional[Sequence[float]] = None):
        self.position = np.asarray(initial, dtype=np.float64).copy()
        self.lower = None if lower is None else np.asarray(lower, dtype=np.float64)
        self.upper = None if upper is None else np.asarray(upper, dtype=np.float64)
        self.time = 0.0

    def advance_to(self, t: float) -> float:
        self.time = max(self.time, float(t))
        return self.time

    def read_joints(self, index: np.ndarray):
        return _Reading(self.time, self.position[np.asarray(index)].copy())

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        index = np.asarray(index)
        targets = np.asarray(targets, dtype=np.float64)
        if self.lower is not None:
            targets = np.clip(targets, self.lower[index], self.upper[index])
        self.position[index] = targets


class LockedBackend:
    """A joint backend used under ``lock`` (a ``threading.Lock`` the backend's owner also holds while
    it steps the backend): for a real-time emulator thread next to a twin stepped by another thread."""

    def __init__(self, backend: JointBackend, lock):
        self.backend = backend
        self.lock = lock

    @property
    def time(self) -> float:
        with self.lock:
            return float(self.backend.time)

    def read_joints(self, index: np.ndarray):
        with self.lock:
            return self.backend.read_joints(index)

    def set_targets(self, index: np.ndarray, targets: np.ndarray) -> None:
        with self.lock:
            self.backend.set_targets(index, targets)


@dataclass(frozen=True)
class _Reading:
    stamp: float
    position: np.ndarray


def allegro_joint_index(backend_joint_names: Sequence[str], prefix: str = "") -> np.ndarray:
    """Backend indices of Allegro joints 0..15, found by name (``prefix + "joint_k.0"``, e.g. prefix
    ``thrower/`` in the cell's 44 contract names). Raises ``ValueError`` naming a missing joint."""
    names = list(backend_joint_names)
    index = []
    for k in range(proto.DOF):
        wanted = f"{prefix}joint_{k}.0"
        if wanted not in names:
            raise ValueError(f"the backend has no joint {wanted!r} ({proto.joint_label(k)})")
        index.append(names.index(wanted))
    return np.array(index)


@dataclass(frozen=True)
class EmulatedHand:
    """What the emulated hand says about itself. Versions as in the hand-info reply (hardware high
    byte 4: a V4); ``serial``: 8 ASCII characters; temperature deg C."""

    hand_side: str = "right"
    serial: str = "EMU0001R"
    hardware_version: int = 0x0400
    firmware_version: int = 0x0010
    temperature_c: int = 35

    def __post_init__(self) -> None:
        if self.hand_side not in ("right", "left"):
            raise ValueError(f"EmulatedHand.hand_side must be 'right' or 'left', got {self.hand_side!r}")
        if len(self.serial.encode("ascii")) != 8:
            raise ValueError(f"EmulatedHand.serial must be 8 ASCII characters, got {self.serial!r}")


class AllegroEmulator:
    """An Allegro hand's firmware on a python-can bus (see the module doc).

    ``bus_kwargs``: ``can.Bus`` arguments (e.g. ``{"interface": "virtual", "channel": "hand"}``).
    ``backend``/``joint_index``: the joints it moves (``joint_index[k]`` for Allegro joint k).
    ``advance_backend(t)``: called after each model step to bring the backend to the emulator's time
    ``t`` (s; the emulator's clock starts at ``backend.time``), e.g.
    ``lambda t: twin.advance(max(0.0, t - twin.time))``; None: someone else advances it. ``reply_wait_s``: lock-step wait for the torque frames (wall s).
    Use :meth:`open` (or ``with``) before anything else; :meth:`close` releases the bus.
    """

    def __init__(self, backend: JointBackend, joint_index: Sequence[int], bus_kwargs: dict, *,
                 device_id: int = 0, hand: EmulatedHand = EmulatedHand(), motor: MotorModel = MotorModel(),
                 advance_backend: Optional[Callable[[float], object]] = None, reply_wait_s: float = 0.05,
                 seed: int = 0):
        self.backend = backend
        self.joint_index = np.asarray(joint_index)
        if self.joint_index.shape != (proto.DOF,):
            raise ValueError(f"joint_index needs {proto.DOF} backend indices (Allegro joints 0..15)")
        self.bus_kwargs = dict(bus_kwargs)
        self.device_id = device_id
        self.hand = hand
        self.motor = motor
        self.advance_backend = advance_backend
        self.reply_wait_s = reply_wait_s
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()  # model, stream state, injection
        self._replied = threading.Condition(threading.Lock())
        self._bus: Optional[can.BusABC] = None
        self._rx: Optional[threading.Thread] = None
        self._streamer: Optional[threading.Thread] = None
        self._stop = threading.Event()
        # firmware state
        self.servo_on = False
        self.period_ms = (0, 0, 0)  # position, imu, temperature
        self.pwm = np.zeros(proto.DOF)
        # injection
        self.loss_probability = 0.0
        self.loss_fingers: frozenset[int] = frozenset(range(4))
        self.silent = False
        self.extra_status = 0
        self.temperature_c = hand.temperature_c
        # model and clock
        self._now = float(getattr(backend, "time", 0.0))
        self._realtime = False
        self._q = self._measured()
        self._v = np.zeros(proto.DOF)
        self._next_cycle: Optional[float] = None
        self._torque_seen = 0
        self._missed_replies = 0
        # counters (frames sent/received/dropped; timing of cycles when record_timing)
        self.frames_sent = 0
        self.frames_dropped = 0
        self.torque_frames = 0
        self.record_timing = False
        self.cycle_sent: dict[int, float] = {}  # cycle number -> perf_counter just before its 4th frame was sent
        self.reply_received: list[tuple[int, float]] = []  # (cycle number, perf_counter of its 4th torque frame)
        self._cycle_number = 0

    # -- life ---------------------------------------------------------------------------------------

    def open(self) -> "AllegroEmulator":
        self._bus = can.Bus(**self.bus_kwargs)
        self._stop.clear()
        self._rx = threading.Thread(target=self._receive, name="allegro-emulator/rx", daemon=True)
        self._rx.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in (self._streamer, self._rx):
            if thread is not None:
                thread.join(timeout=2.0)
        self._streamer = self._rx = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def __enter__(self) -> "AllegroEmulator":
        return self.open() if self._bus is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- clocks -------------------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's time (s): its lock-step clock, or ``time.monotonic()`` in real time."""
        return time.monotonic() if self._realtime else self._now

    def step(self, dt: float) -> float:
        """Lock-step: advance ``dt`` s (whole position periods while streaming); returns :meth:`now`."""
        if self._realtime:
            raise RuntimeError("the emulator streams in real time: step() is for lock-step use")
        end = self._now + float(dt)
        while True:
            with self._lock:
                period = self.period_ms[0] / 1000.0
                due = self._next_cycle if period > 0 else None
            if due is None or due > end + 1e-12:
                break
            self._advance_model_to(due)
            self._cycle(wait=True)
        self._advance_model_to(end)
        return self._now

    def start_streaming(self) -> None:
        """Real time: a thread streams and moves the model every period on ``time.monotonic``."""
        with self._lock:
            self._realtime = True
            self._now = time.monotonic()
        self._streamer = threading.Thread(target=self._stream, name="allegro-emulator/stream", daemon=True)
        self._streamer.start()

    # -- fault injection ----------------------------------------------------------------------------

    def lose_frames(self, probability: float, fingers: Optional[Sequence[int]] = None) -> None:
        """Drop each outgoing position frame with ``probability`` (0..1), for ``fingers`` (bus
        numbers 0 index .. 3 thumb; None: all). ``lose_frames(0)`` stops losing."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        with self._lock:
            self.loss_probability = float(probability)
            self.loss_fingers = frozenset(range(4) if fingers is None else fingers)

    def set_silent(self, silent: bool = True) -> None:
        """A silent bus: the hand sends nothing and ignores everything it is sent."""
        self.silent = bool(silent)

    def set_over_temperature(self, on: bool = True, temperature_c: int = 80) -> None:
        """Set (or clear) status bit 0x02 'high temperature fault', reporting ``temperature_c``."""
        with self._lock:
            if on:
                self.extra_status |= proto.STATUS_OVER_TEMPERATURE
                self.temperature_c = temperature_c
            else:
                self.extra_status &= ~proto.STATUS_OVER_TEMPERATURE
                self.temperature_c = self.hand.temperature_c

    def set_status_bits(self, bits: int) -> None:
        """Extra status bits ORed into the hand-info reply (0x04: internal communication fault)."""
        self.extra_status = int(bits)

    # -- firmware -----------------------------------------------------------------------------------

    def status(self) -> int:
        return (proto.STATUS_SERVO_ON if self.servo_on else 0) | self.extra_status

    def _measured(self) -> np.ndarray:
        return np.asarray(self.backend.read_joints(self.joint_index).position, dtype=np.float64).copy()

    def _advance_model_to(self, t: float) -> None:
        with self._lock:
            dt = t - self._now
            self._now = t
            if dt <= 0:
                return
            duty = self.pwm / proto.PWM_FULL_SCALE if self.servo_on else np.zeros(proto.DOF)
            self._q, self._v = self.motor.step(self._q, self._v, duty, dt)
            self.backend.set_targets(self.joint_index, self._q)
        if self.advance_backend is not None:
            self.advance_backend(t)

    def _cycle(self, wait: bool) -> None:
        """Send one cycle of position frames (unless silent); in lock-step wait for the replies."""
        with self._lock:
            period = self.period_ms[0] / 1000.0
            start = self._now if self._next_cycle is None else self._next_cycle
            self._next_cycle = start + period if period > 0 else None
            if self.silent or period <= 0:
                return
            position = self._measured()
            sent = 0
            last_sent = 0.0
            with self._replied:
                self._torque_seen = 0
                self._cycle_number += 1
                number = self._cycle_number
            payloads = proto.encode_hand_positions(position)
            for finger in range(4):
                if finger in self.loss_fingers and self.loss_probability > 0 and \
                        self._rng.random() < self.loss_probability:
                    self.frames_dropped += 1
                    continue
                last_sent = time.perf_counter()
                self._send(proto.CMD_POSITION + finger, payloads[finger])
                sent += 1
            if self.record_timing and sent == 4:
                self.cycle_sent[number] = last_sent
            expect = wait and sent == 4 and self.servo_on and self._missed_replies < 3
        if expect:
            with self._replied:
                got = self._replied.wait_for(lambda: self._torque_seen == 0xF, timeout=self.reply_wait_s)
            self._missed_replies = 0 if got else self._missed_replies + 1

    def _stream(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                period = self.period_ms[0] / 1000.0
            if period <= 0:
                time.sleep(0.001)
                next_t = time.monotonic()
                self._advance_model_to(next_t)
                continue
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # more than a period late: skip, do not burst
                next_t = time.monotonic()
            self._advance_model_to(time.monotonic())
            self._cycle(wait=False)

    def _receive(self) -> None:
        bus = self._bus
        while not self._stop.is_set():
            msg = bus.recv(timeout=0.01)
            if msg is None or msg.is_error_frame or self.silent:
                continue
            command, device = proto.split_id(msg.arbitration_id)
            if device != self.device_id:
                continue
            self._handle(command, msg)

    def _handle(self, command: int, msg: can.Message) -> None:
        if msg.is_remote_frame:
            if command == proto.CMD_HAND_INFO:
                info = proto.HandInfo(self.hand.hardware_version, self.hand.firmware_version,
                                      1 if self.hand.hand_side == "left" else 0, self.temperature_c, self.status())
                self._send(command, info.encode())
            elif command == proto.CMD_SERIAL:
                self._send(command, self.hand.serial.encode("ascii"))
            elif proto.CMD_POSITION <= command < proto.CMD_POSITION + 4:
                finger = command - proto.CMD_POSITION
                with self._lock:
                    position = self._measured()
                self._send(command, proto.encode_positions(position[4 * finger:4 * finger + 4]))
            elif proto.CMD_TEMPERATURE <= command < proto.CMD_TEMPERATURE + 4:
                self._send(command, int(self.temperature_c).to_bytes(4, "little", signed=True))
            return
        if proto.CMD_SET_TORQUE <= command < proto.CMD_SET_TORQUE + 4:
            finger = command - proto.CMD_SET_TORQUE
            pwm = np.clip(proto.decode_pwm(msg.data), -proto.PWM_FULL_SCALE, proto.PWM_FULL_SCALE)
            with self._lock:
                self.pwm[4 * finger:4 * finger + 4] = pwm
            self.torque_frames += 1
            self._missed_replies = 0
            with self._replied:
                self._torque_seen |= 1 << finger
                if self._torque_seen == 0xF:
                    if self.record_timing:
                        self.reply_received.append((self._cycle_number, time.perf_counter()))
                    self._replied.notify_all()
        elif command == proto.CMD_SYSTEM_ON:
            with self._lock:
                if not self.servo_on:  # the motors start where the joints are, at rest
                    self._q, self._v = self._measured(), np.zeros(proto.DOF)
                    self.pwm[:] = 0
                self.servo_on = True
        elif command == proto.CMD_SYSTEM_OFF:
            with self._lock:
                self.servo_on = False
                self.pwm[:] = 0
        elif command == proto.CMD_SET_PERIOD:
            periods = proto.decode_period(msg.data)
            with self._lock:
                was_streaming = self.period_ms[0] > 0
                self.period_ms = periods
                if periods[0] > 0 and not was_streaming:
                    self._next_cycle = None  # the first cycle goes out now
                    self._cycle(wait=False)
                elif periods[0] == 0:
                    self._next_cycle = None

    def _send(self, command: int, data: bytes) -> None:
        bus = self._bus
        if bus is None or self.silent:
            return
        try:
            bus.send(can.Message(arbitration_id=proto.can_id(command, self.device_id), is_extended_id=False,
                                 data=data), timeout=0.01)
            self.frames_sent += 1
        except can.CanError:
            pass  # nobody listening (a full queue): a real bus would lose the frame too
