"""The Allegro Hand V4 joint group on python-can: the vendor's start-up, PC-side PD loop and shut-down.

Threads and clocks
- One I/O thread per hand (``<name>/can``) owns the receive side of the bus. It runs the PD loop:
  when the four finger position frames of a cycle have arrived (every ``loop_period_s``, 3 ms,
  333 Hz: the hand streams them), it filters, computes the PWM duties and sends the four torque
  frames at once. The caller's control loop never waits on CAN: ``read`` returns the newest
  complete cycle and ``command`` only stores the PD target (both take a lock held for microseconds).
- ``clock`` (s) stamps everything: ``time.monotonic`` on hardware; tests may pass an emulator's
  clock. A state's ``stamp`` is the clock when the last of its cycle's four position frames was
  received by the I/O thread.

Start-up (``configure``), as the vendor's ``AllegroHandDrv::init``: open the bus (interface and
channel from :class:`~handover.drivers.allegro.config.AllegroConfig`), flush the receive queue,
system off, request hand info, request serial, set period {position 3 ms, imu 0, temperature 0},
system on. Then it waits (``reply_timeout_s``) for the info and serial replies and the first
complete cycle; the hand's side must match the config and no fault bit may be set. From the first
cycle on the PD loop holds the measured position (the device "holds by itself" while INACTIVE).

PD law (the vendor's ``allegro_node.cpp`` / ``allegro_node_pd.cpp``), per joint, each cycle:
``pf = a pf + b_prev p_prev + b_cur p`` (filtered position), ``v = (pf - pf_prev) / dt``,
``vf = a vf + b_prev v_raw_prev + b_cur v`` where ``v_raw_prev = (p_prev - p_prev_prev) / dt_prev``
(the vendor filters the filtered-position derivative against the previous raw derivative),
``pwm = clip(clip((kp (target - pf) - kd vf) / 1200, -1, 1) * 1200, +-pwm_limit)`` truncated to an
integer as the vendor's C cast does. ``dt`` is the time between the two cycles (the vendor measures
its loop time too; a dt outside (0, 10 periods] is replaced by the nominal period).
The vendor's filter has a DC gain of ``(b_prev + b_cur) / (1 - a)`` = 0.99, which leaves the
vendor's node 1 % short of its target at rest; this driver multiplies the target by the same gain
so that at rest the measured position equals the commanded one. Nothing else differs.

Activate: the PD target becomes the measured position (raw, times the DC gain: the filtered
position at rest), so the PD error is zero: nothing moves that was not asked. ``hold``/``stop``
target the measured position; ``deactivate`` keeps the last target.

Faults (the device goes to FAULT, the reason names the vendor's words; recovery:
``close()``, then ``configure()`` and ``activate()`` once the cause is gone):
- hand-info status bit 0x02 "high temperature fault", 0x04 "internal communication fault", the
  servo reported off (bit 0x01 clear) while the driver has it on, or the reported temperature above
  ``temperature_limit_c``; checked at start-up and every ``status_period_s``;
- lost position frames: a finger with no position frame for ``position_timeout_s`` (a silent bus:
  every finger). Detected within ``position_timeout_s + watchdog_s`` by the I/O thread, and by any
  ``read(now)`` whose ``now`` is that far past the newest cycle;
- no reply to a hand-info request within ``reply_timeout_s``; a CAN send or receive error.
In FAULT the PD loop stops and every further cycle is answered with zero torque (the vendor's
"control off" output) until ``close()``.

Shut-down (``close``): stop the I/O thread, set period {0, 0, 0} (the vendor's destructor), system
off (the newer ROS 2 driver's), close the bus.

Measured values: positions (rad, raw), velocities (rad/s, the vendor's filtered velocity); no effort
(the hand does not measure torque). Joint order: ``info.names``; the bus order is mapped by name.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import can
import numpy as np

from handover.drivers.allegro import protocol as proto
from handover.drivers.allegro.config import AllegroConfig
from handover.drivers.device import Lifecycle
from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState

_HISTORY = 16  # complete cycles kept for reads at an earlier now (48 ms at 3 ms)


class AllegroFault(RuntimeError):
    """The hand or its bus failed (status bit, lost frames, silent bus, no reply, CAN error)."""


@dataclass
class AllegroStats:
    """Counters of the I/O thread (read them any time; approximate while it runs).

    Times in s on the driver's clock; ``cpu_s`` is the I/O thread's own CPU time (``time.thread_time``).
    """

    cycles: int = 0  # complete position cycles (one PD step each)
    torque_frames: int = 0
    late_cycles: int = 0  # cycles more than 1.5 periods after the previous one (a lost or late frame)
    info_replies: int = 0
    serial: str = ""
    info: Optional[proto.HandInfo] = None
    cpu_s: float = 0.0
    # (cycle stamp, torque sent) per cycle, the newest last, when record_timing is on (s)
    timing: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200_000))


class _PD:
    """The vendor's filter and PD law for 16 joints (Allegro numbering). Not thread-safe: used by
    the I/O thread only."""

    def __init__(self, cfg: AllegroConfig):
        self.cfg = cfg
        self.a, self.b0, self.b1 = cfg.filter
        self.kp = np.asarray(cfg.kp)
        self.kd = np.asarray(cfg.kd)
        self.limit = np.asarray(cfg.pwm_limit)
        self.period = cfg.loop_period_s
        self.p = self.pf = self.v_raw = self.vf = None
        self.stamp = 0.0

    def set_gains(self, cfg: AllegroConfig) -> None:
        self.kp = np.asarray(cfg.kp)
        self.kd = np.asarray(cfg.kd)

    def reset(self, position: np.ndarray, stamp: float) -> None:
        """Start the filter at rest at ``position`` (rad)."""
        self.p = position.copy()
        self.pf = position * self.cfg.filter_dc_gain  # the filter's steady state at rest
        self.v_raw = np.zeros(proto.DOF)
        self.vf = np.zeros(proto.DOF)
        self.stamp = stamp

    def update(self, position: np.ndarray, stamp: float) -> None:
        """Filter one new cycle of raw positions (rad) that arrived at ``stamp`` (s)."""
        if self.p is None:
            self.reset(position, stamp)
            return
        dt = stamp - self.stamp
        if not 0.0 < dt <= 10 * self.period:
            dt = self.period
        pf_prev = self.pf
        self.pf = self.a * self.pf + self.b0 * self.p + self.b1 * position
        v = (self.pf - pf_prev) / dt
        self.vf = self.a * self.vf + self.b0 * self.v_raw + self.b1 * v
        self.v_raw = (position - self.p) / dt
        self.p = position.copy()
        self.stamp = stamp

    def pwm(self, target: np.ndarray) -> np.ndarray:
        """PWM duties (int counts) toward ``target`` (rad, already times the DC gain)."""
        tau = (self.kp * (target - self.pf) - self.kd * self.vf) / proto.PWM_FULL_SCALE
        pwm = np.clip(np.clip(tau, -1.0, 1.0) * proto.PWM_FULL_SCALE, -self.limit, self.limit)
        return np.trunc(pwm).astype(np.int64)


class AllegroHand(JointGroup):
    """One Allegro Hand V4 on a CAN bus (see the module doc).

    ``info.names`` must name the 16 Allegro joints (``joint_k.0``, any prefix such as
    ``thrower/``), each once, in any order: the driver maps them to bus fingers by name.
    ``record_timing`` keeps (cycle stamp, torque-sent time) pairs in :attr:`stats` for benchmarks.
    ``gains_for_serial(serial)``: called at configure with the hand's serial (e.g. to read a
    calibration file named by it); it returns None (keep the config's gains) or a mapping with
    ``kp`` and/or ``kd`` in the config's format (16 values in Allegro numbering, or ``{joint_k.0: v}``),
    validated like the config. :attr:`active_config` is the configuration in use.
    """

    def __init__(self, info: JointGroupInfo, config: AllegroConfig, name: str, *,
                 clock: Callable[[], float] = time.monotonic, record_timing: bool = False,
                 gains_for_serial: Optional[Callable[[str], Optional[Mapping]]] = None):
        if not info.provides_velocity or info.provides_effort:
            info = dataclasses.replace(info, provides_velocity=True, provides_effort=False)
        super().__init__(info, name)
        if info.size != proto.DOF:
            raise ValueError(f"{name}: an Allegro hand has {proto.DOF} joints, info names {info.size}")
        try:
            numbers = [proto.allegro_number(n) for n in info.names]
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if sorted(numbers) != list(range(proto.DOF)):
            missing = sorted(set(range(proto.DOF)) - set(numbers))
            raise ValueError(f"{name}: joint names must cover joint_0.0 ... joint_15.0 once each; "
                             f"missing {[proto.joint_label(k) for k in missing]}")
        self.config = config
        self.active_config = config
        self.gains_for_serial = gains_for_serial
        self.clock = clock
        self.record_timing = record_timing
        # slot i of info.names is Allegro joint _to_bus[i]
        self._to_bus = np.array(numbers)
        self._lock = threading.Lock()  # target, history, fault
        self._send_lock = threading.Lock()
        self._bus: Optional[can.BusABC] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._replies = {"info": threading.Event(), "serial": threading.Event(), "cycle": threading.Event()}
        self._reset_runtime()

    # -- public extras ------------------------------------------------------------------------------

    @staticmethod
    def from_cell(cell, side: str, config: AllegroConfig, **kwargs) -> "AllegroHand":
        """The ``side`` hand of a :class:`~handover.runtime.cell_config.CellConfig`, named
        ``allegro/<side>/hand``."""
        group = getattr(cell, side).hand
        info = JointGroupInfo.from_config(group, provides_velocity=True, provides_effort=False, gate=cell.gate,
                                          control_period_s=cell.control_period_s)
        return AllegroHand(info, config, name=f"allegro/{side}/hand", **kwargs)

    @property
    def thread_fault(self) -> Optional[str]:
        """The fault the I/O thread found (None if none); it also puts the device in FAULT."""
        return self._fault

    @property
    def hand_info(self) -> Optional[proto.HandInfo]:
        return self.stats.info

    @property
    def serial(self) -> str:
        """The hand's serial (from start-up; calibration files are named by it)."""
        return self.stats.serial

    def diagnostics(self) -> dict:
        """For ``/diagnostics``: bus, serial, the hand's last status bits and temperature (vendor
        words), PD cycles and late cycles, and the I/O thread's fault."""
        cfg, stats, info = self.config, self.stats, self.stats.info
        values = {"can": f"{cfg.interface}:{cfg.channel} device id {cfg.device_id}", "serial": stats.serial or "?",
                  "pd_cycles": stats.cycles, "pd_late_cycles": stats.late_cycles, "io_thread_fault": self._fault or ""}
        if info is not None:
            values["hand_status"] = proto.describe_status(info.status)
            values["hand_temperature_c"] = info.temperature_c
        return values

    def pd_target(self) -> np.ndarray:
        """The PD target (rad, ``info.names`` order, before the DC-gain scaling)."""
        with self._lock:
            target = self._target
        if target is None:
            raise RuntimeError(f"{self.name}: no PD target yet (not configured)")
        return (target / self.config.filter_dc_gain)[self._to_bus]

    # -- lifecycle hooks ----------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        self._fault: Optional[str] = None
        self._target: Optional[np.ndarray] = None  # Allegro order, times the DC gain
        self._history: collections.deque = collections.deque(maxlen=_HISTORY)
        self._servo_expected = False
        self._pd: Optional[_PD] = None
        self.active_config = self.config
        self.stats = AllegroStats()
        for event in self._replies.values():
            event.clear()

    def _on_configure(self) -> None:
        cfg = self.config
        self._reset_runtime()
        self._bus = can.Bus(**cfg.bus_kwargs())
        self._flush()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}/can", daemon=True)
        self._thread.start()
        self._send(proto.CMD_SYSTEM_OFF)
        self._send(proto.CMD_HAND_INFO, remote=True)
        self._send(proto.CMD_SERIAL, remote=True)
        self._send(proto.CMD_SET_PERIOD, proto.encode_period(cfg.period_ms, 0, 0))
        self._servo_expected = True
        self._send(proto.CMD_SYSTEM_ON)
        for what, event in self._replies.items():
            if not event.wait(cfg.reply_timeout_s):
                raise AllegroFault(self._no_reply_message(what))
        self._raise_if_faulted()
        info = self.stats.info
        if info.side != cfg.hand_side:
            raise AllegroFault(f"the hand on {cfg.interface}:{cfg.channel} id {cfg.device_id} reports a {info.side} "
                               f"hand (info byte 4 = {info.hand_type}), the config says {cfg.hand_side}")
        if self.gains_for_serial is not None:
            self._load_gains(self.stats.serial)

    def _load_gains(self, serial: str) -> None:
        """Replace kp/kd by the ones for this serial (if any); the PD loop uses them from its next cycle."""
        gains = self.gains_for_serial(serial)
        if not gains:
            return
        unknown = sorted(set(gains) - {"kp", "kd"})
        if unknown:
            raise AllegroFault(f"gains for serial {serial}: unknown key {unknown[0]!r} (expected kp, kd)")
        raw = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(AllegroConfig)
               if not f.metadata.get("not_a_key")}
        raw.update(gains)
        config = AllegroConfig.from_dict(raw, source=f"gains for serial {serial}")
        with self._lock:
            self.active_config = config
            if self._pd is not None:
                self._pd.set_gains(config)

    def _no_reply_message(self, what: str) -> str:
        cfg = self.config
        where = f"{cfg.interface}:{cfg.channel} device id {cfg.device_id}"
        if what == "cycle":
            return (f"no complete position cycle (4 finger frames, ids 0x{proto.can_id(proto.CMD_POSITION, cfg.device_id):03x}"
                    f"...) within {cfg.reply_timeout_s} s after set period on {where}")
        command = proto.CMD_HAND_INFO if what == "info" else proto.CMD_SERIAL
        return (f"no reply to the {'hand-info' if what == 'info' else 'serial'} request (id "
                f"0x{proto.can_id(command, cfg.device_id):03x}) within {cfg.reply_timeout_s} s on {where}: "
                f"is the hand powered and the bus wired?")

    def _on_activate(self) -> None:
        self._raise_if_faulted()
        with self._lock:
            newest = self._history[-1] if self._history else None
            if newest is None:
                raise AllegroFault("no position measured yet")
            self._target = newest[1] * self.config.filter_dc_gain

    def _on_close(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=2.0)
        bus, self._bus = self._bus, None
        if bus is None:
            return
        try:  # the shut-down sequence, best effort: a dead bus must not keep close() from closing
            self._send_on(bus, proto.CMD_SET_PERIOD, proto.encode_period(0, 0, 0))
            self._send_on(bus, proto.CMD_SYSTEM_OFF)
        except (can.CanError, OSError):
            pass
        finally:
            self._servo_expected = False
            bus.shutdown()

    # -- joint-group hooks --------------------------------------------------------------------------

    def _on_read(self, now: float) -> JointState:
        self._raise_if_faulted()
        with self._lock:
            history = list(self._history)
        if not history:
            raise AllegroFault("no position measured yet")
        newest = history[-1][0]
        if now - newest > self.config.position_timeout_s:
            raise AllegroFault(self._stale_message(now))
        stamp, position, velocity = next((h for h in reversed(history) if h[0] <= now), history[0])
        return JointState(stamp=stamp, position=position[self._to_bus], velocity=velocity[self._to_bus])

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        self._raise_if_faulted()
        target = np.empty(proto.DOF)
        target[self._to_bus] = np.asarray(targets, dtype=np.float64)
        with self._lock:
            self._target = target * self.config.filter_dc_gain

    # -- faults -------------------------------------------------------------------------------------

    def _raise_if_faulted(self) -> None:
        if self._fault is not None:
            raise AllegroFault(self._fault)

    def _report_fault(self, reason: str) -> None:
        """From the I/O thread: latch the first fault and put the device in FAULT now."""
        with self._lock:
            if self._fault is not None:
                return
            self._fault = reason
        # FAULT at once (thread-safe; during configure, configure ends in FAULT)
        self.report_fault(f"{self.config.interface}:{self.config.channel}: {reason}")

    def _stale_message(self, now: float) -> str:
        cfg = self.config
        ages = [now - t for t in self._finger_seen]
        silent = [proto.FINGERS[f] for f, age in enumerate(ages) if age > cfg.position_timeout_s]
        if len(silent) == len(proto.FINGERS):
            what = "bus silent: no position frame from any finger"
        else:
            ids = ", ".join(f"0x{proto.can_id(proto.CMD_POSITION + proto.FINGERS.index(f), cfg.device_id):03x}"
                            for f in silent)
            what = f"position frames lost: none from finger(s) {', '.join(silent)} (id {ids})" if silent else \
                "no complete position cycle"
        return f"{what} for more than {cfg.position_timeout_s * 1000:.0f} ms (oldest {max(ages) * 1000:.0f} ms)"

    # -- the I/O thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        """The I/O thread: like the vendor's ``updateController``, drain every frame waiting, then run
        one PD step if all four fingers have reported since the last one; then the watchdog (after
        the drain, so that a thread that was not scheduled for a while does not see its own delay as
        lost frames)."""
        cfg = self.config
        pd = _PD(cfg)
        with self._lock:
            self._pd = pd
        cycle = np.zeros(proto.DOF)
        seen = 0
        start = self.clock()
        self._finger_seen = [start] * len(proto.FINGERS)
        next_status = start + cfg.status_period_s
        self._info_requested_at: Optional[float] = None
        cpu0 = time.thread_time()
        bus = self._bus
        try:
            while not self._stop.is_set():
                msg = bus.recv(timeout=cfg.watchdog_s)
                while msg is not None:
                    seen = self._receive(msg, cycle, seen)
                    msg = bus.recv(timeout=0.0)
                now = self.clock()
                if seen == 0xF:
                    seen = 0
                    self._cycle(pd, cycle, max(self._finger_seen))
                # the watchdog (once configured: the start-up waits report their own timeouts)
                if self._fault is None and self._replies["cycle"].is_set():
                    if min(self._finger_seen) < now - cfg.position_timeout_s:
                        self._report_fault(self._stale_message(now))
                    elif self._info_requested_at is not None and now - self._info_requested_at > cfg.reply_timeout_s:
                        self._report_fault(f"no reply to the hand-info request for {cfg.reply_timeout_s} s "
                                           "(status bits unknown)")
                    elif cfg.status_period_s > 0 and now >= next_status:
                        next_status = now + cfg.status_period_s
                        if self._info_requested_at is None:
                            self._info_requested_at = now
                        self._send(proto.CMD_HAND_INFO, remote=True)
                self.stats.cpu_s = time.thread_time() - cpu0
        except Exception as exc:  # noqa: BLE001 - a dead I/O thread must show as a FAULT
            self._report_fault(f"CAN I/O failed: {type(exc).__name__}: {exc}")

    def _receive(self, msg: can.Message, cycle: np.ndarray, seen: int) -> int:
        """Take one received frame (stamped with the clock now); returns the updated finger mask."""
        if msg.is_error_frame or msg.is_remote_frame:  # remote frames are requests (ours, echoed)
            return seen
        command, device = proto.split_id(msg.arbitration_id)
        if device != self.config.device_id:
            return seen
        if proto.CMD_POSITION <= command < proto.CMD_POSITION + 4:
            finger = command - proto.CMD_POSITION
            cycle[4 * finger:4 * finger + 4] = proto.decode_positions(msg.data)
            self._finger_seen[finger] = self.clock()
            return seen | 1 << finger
        if command == proto.CMD_HAND_INFO:
            polled = self._info_requested_at is not None  # an answer to the status poll, not start-up's
            self._info_requested_at = None
            self._on_info(proto.HandInfo.decode(msg.data), polled)
        elif command == proto.CMD_SERIAL:
            self.stats.serial = bytes(msg.data).decode("ascii", "replace").strip("\0 ")
            self._replies["serial"].set()
        return seen

    def _cycle(self, pd: _PD, position: np.ndarray, stamp: float) -> None:
        """One PD step on a complete cycle of raw positions (Allegro order, rad) received at ``stamp``."""
        stats = self.stats
        previous = pd.stamp if pd.p is not None else None
        with self._lock:  # the lock also covers a gain change from configure
            pd.update(position, stamp)
            self._history.append((stamp, pd.p.copy(), pd.vf.copy()))
            if self._target is None:
                self._target = pd.p * self.config.filter_dc_gain  # hold where the joints are
            target = self._target
            pwm = pd.pwm(target)
        stats.cycles += 1
        if previous is not None and stamp - previous > 1.5 * self.config.loop_period_s:
            stats.late_cycles += 1
        self._replies["cycle"].set()
        if self._fault is not None or self.state is Lifecycle.FAULT:
            pwm = np.zeros(proto.DOF, dtype=np.int64)
        for finger in range(4):
            self._send(proto.CMD_SET_TORQUE + finger, proto.encode_pwm(pwm[4 * finger:4 * finger + 4]))
        stats.torque_frames += 4
        if self.record_timing:
            stats.timing.append((stamp, self.clock()))

    def _on_info(self, info: proto.HandInfo, polled: bool = False) -> None:
        """A hand-info reply. The servo-off check applies to the status poll's replies only: the
        start-up request is sent after system off and before system on, so its reply says off (and
        a hand still streaming from an earlier run can complete a cycle before that reply comes)."""
        self.stats.info = info
        self.stats.info_replies += 1
        self._replies["info"].set()
        cfg = self.config
        faults = proto.fault_bits_message(info.status)
        if faults is not None:
            self._report_fault(f"the hand reports {faults} (status {proto.describe_status(info.status)}, "
                               f"temperature {info.temperature_c} deg C)")
        elif info.temperature_c > cfg.temperature_limit_c:
            self._report_fault(f"hand temperature {info.temperature_c} deg C above the limit "
                               f"{cfg.temperature_limit_c} deg C (status {proto.describe_status(info.status)})")
        elif polled and self._servo_expected and self._replies["cycle"].is_set() and not info.servo_on:
            self._report_fault(f"the hand reports its servo off (status bit 0x01 clear: "
                               f"{proto.describe_status(info.status)}) while the driver has it on")

    # -- sending ------------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Drop whatever the receive queue holds (the vendor's ``command_can_flush``)."""
        while self._bus.recv(timeout=0.0) is not None:
            pass

    def _send(self, command: int, data: bytes = b"", remote: bool = False) -> None:
        bus = self._bus
        if bus is None:
            raise AllegroFault("the CAN bus is closed")
        self._send_on(bus, command, data, remote)

    def _send_on(self, bus: can.BusABC, command: int, data: bytes = b"", remote: bool = False) -> None:
        msg = can.Message(arbitration_id=proto.can_id(command, self.config.device_id), is_extended_id=False,
                          is_remote_frame=remote, data=None if remote else data, dlc=0 if remote else len(data))
        with self._send_lock:
            bus.send(msg, timeout=0.01)
