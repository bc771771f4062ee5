"""The xArm6 joint group on ``xarm-python-sdk`` (``xarm.wrapper.XArmAPI``), streaming servo targets
from its own thread.

Threads and clocks
- The caller (the control loop) never waits on the SDK: ``read`` returns the newest measurement the
  stream thread made, ``command`` stores the newest gated target; both only take a short lock.
- The stream thread (one per device, started by ``configure``, ended by ``close``) runs at
  ``stream_rate_hz`` on an absolute schedule (a late cycle is skipped, not made up). Each cycle:
  ``set_servo_angle_j(newest target)`` while streaming, ``get_joint_states`` (position rad,
  velocity rad/s, effort N*m), and ``get_err_warn_code`` whenever a reply carried the error or
  warning bit, and at ``error_poll_hz`` anyway.
- A measurement's ``stamp`` is the midpoint of its ``get_joint_states`` round trip on
  ``time.monotonic()`` (off by at most half the round trip, ~0.2 ms on a LAN). Pass monotonic time
  as ``now``.
- The SDK's command socket gets ``TCP_NODELAY`` (the SDK never sets it; with Nagle and delayed ACKs
  a request can stall 40-200 ms).

Lifecycle on the controller
- ``configure``: connect (``forbid_uds=True``, ``is_radian=True``), write the collision sensitivity
  if configured, read the error/warning codes and a first joint state, start the thread. A latched
  controller error does not fail configure (states stay readable; :attr:`controller_codes` shows it).
- ``activate``: refuses while an error is latched (see *Recovery*); else ``motion_enable(True)``,
  ``set_mode(1)`` (servo), ``set_state(0)``, checks the state and the codes, waits until the report
  shows mode 1 (at most 1 s; the rich report comes at ~5 Hz), measures the joints and
  streams exactly that position until the first command: nothing moves that was not asked to.
- ``deactivate``: streams the measured position once more, then stops streaming (the controller
  holds its last servo target).
- ``stop``: the gate's hold (the measured position) is sent once, then ``set_state(4)`` until
  ``get_state`` reads 4 (the SDK's ``emergency_stop`` semantics, bounded by ``stop_timeout_s``); the
  controller holds and refuses motion until ``set_state(0)`` (the next ``activate``). Done by the
  stream thread: ``stop`` returns at once.
- ``close``: the thread finishes its pending sends, ends, and the SDK disconnects.

Faults: an SDK call returning non-zero, a controller error (or warning, ``fault_on_warning``), a lost
connection, a reply later than ``reply_timeout_s``, or a newest measurement older than
``max_state_age_s`` puts the device in FAULT (what the stream thread finds: at once, through
:meth:`~handover.drivers.device.Device.report_fault`; a stale measurement: at the next ``read``): the message names the
device and gives the vendor's code and words (:mod:`handover.drivers.xarm.codes`). The thread stops
sending on a fault (the controller holds the last target; on an error it has stopped by itself).

Recovery (after the cause is removed): ``close()``, ``configure()``, :meth:`XArmJointGroup.recover`
(``clean_error``, ``clean_warn``; refuses if the error stays), ``activate()`` (``motion_enable``,
``set_mode(1)``, ``set_state(0)``). A fault without a controller error (connection, timeout) needs
no ``recover()``.

Joints are mapped by name: the group's joint names end in ``joint1`` .. ``joint6`` (xArm axis
numbers), in any order.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from handover.drivers.device import Lifecycle
from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState
from handover.drivers.xarm.codes import api_code_text, controller_error_text, controller_warn_text, state_text
from handover.drivers.xarm.config import XArmConfig

XARM6_AXES = 6
_AXIS_RE = re.compile(r"(?:^|/)joint([1-7])$")
_READY_STATES = (0, 1, 2)  # ready, in motion, sleeping
STOPPED_STATE = 4
REPLY_TIMEOUT = 3  # the SDK's return code for a reply that did not come in time (APIState.RES_TIMEOUT)
MODE_REPORT_TIMEOUT_S = 1.0  # the rich/normal reports come at ~5 Hz


class XArmError(RuntimeError):
    """An xArm call failed; the message gives the vendor's code and words (``code``: the SDK's
    return code, if one)."""

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.code = code


@dataclass
class StreamStats:
    """What the stream thread did (monotonic seconds). :meth:`XArmJointGroup.stream_stats` gives a copy."""

    started: float = 0.0
    cycles: int = 0
    sent: int = 0  # servo targets sent
    reads: int = 0
    skipped_cycles: int = 0  # cycles dropped because the thread fell more than a period behind;
    # cycles + skipped_cycles == periods since started (the schedule keeps to its grid)
    thread_cpu_s: float = 0.0  # CPU time of the stream thread since started
    send_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))
    servo_rtt_s: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))
    read_rtt_s: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))

    def achieved_rate_hz(self, window_s: Optional[float] = None) -> float:
        """Servo targets per second over the last ``window_s`` (default: everything kept)."""
        times = list(self.send_times)
        if window_s is not None and times:
            times = [t for t in times if t >= times[-1] - window_s]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def copy(self) -> "StreamStats":
        return StreamStats(self.started, self.cycles, self.sent, self.reads, self.skipped_cycles, self.thread_cpu_s,
                           collections.deque(self.send_times, maxlen=4096),
                           collections.deque(self.servo_rtt_s, maxlen=4096),
                           collections.deque(self.read_rtt_s, maxlen=4096))


def axis_indices(names) -> np.ndarray:
    """xArm axis index (0-based) of each joint name (``.../joint1`` .. ``.../joint6``), by name."""
    axes = []
    for n in names:
        m = _AXIS_RE.search(n)
        if m is None:
            raise ValueError(f"joint name {n!r} does not end in joint1..joint6 (the xArm's axis numbers)")
        axes.append(int(m.group(1)) - 1)
    if sorted(axes) != list(range(XARM6_AXES)):
        raise ValueError(f"joint names {list(names)} must name the xArm6 axes joint1..joint6 once each")
    return np.array(axes)


def _sdk_factory(cfg: XArmConfig):
    """An unconnected ``XArmAPI`` for ``cfg`` (the SDK is imported here: it prints its version and
    creates ~/.UFACTORY/log on import)."""
    from xarm.wrapper import XArmAPI  # noqa: PLC0415 - optional dependency, hardware only

    return XArmAPI(cfg.address, is_radian=True, do_not_open=True, forbid_uds=cfg.forbid_uds,
                   report_type=cfg.report_type)


class XArmJointGroup(JointGroup):
    """One xArm6 behind the :class:`JointGroup` interface (see the module docstring).

    ``on_fault(message)``, if given, is called from the stream thread when it detects a fault (for
    diagnostics); the device enters FAULT at once (:meth:`~handover.drivers.device.Device.report_fault`)."""

    def __init__(self, info: JointGroupInfo, name: str, config: XArmConfig, *,
                 on_fault: Optional[Callable[[str], None]] = None, sdk_factory=_sdk_factory):
        super().__init__(info, name)
        if info.size != XARM6_AXES:
            raise ValueError(f"{name}: an xArm6 group has 6 joints, got {info.size}: {list(info.names)}")
        try:
            self._axes = axis_indices(info.names)  # group slot i <-> xArm axis self._axes[i]
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        self.config = config
        self._on_fault_cb = on_fault
        self._sdk_factory = sdk_factory
        self._arm = None
        self._lock = threading.Lock()  # guards the fields below (held for copies only)
        self._latest: Optional[JointState] = None
        self._target: Optional[np.ndarray] = None  # xArm axis order, rad
        self._streaming = False
        self._send_once: Optional[np.ndarray] = None
        self._stop_requested = False
        self._fault: Optional[str] = None
        self._codes = (0, 0)  # (error, warning) last read from the controller
        self._known_codes = (0, 0)  # latched at configure / cleared by recover(): not a new fault
        self._stats = StreamStats()
        self._thread: Optional[threading.Thread] = None
        self._closing = threading.Event()
        self._codes_due = 0.0
        self._in_call: tuple = ("", 0.0)  # (SDK call the stream thread is in, since when), for messages

    @staticmethod
    def from_cell_config(cell_cfg, side: str, config: XArmConfig, name: Optional[str] = None,
                         **kwargs) -> "XArmJointGroup":
        """The ``side`` ('thrower' / 'catcher') arm of a :class:`~handover.runtime.cell_config.CellConfig`."""
        group = getattr(cell_cfg, side).arm
        info = JointGroupInfo.from_config(group, provides_velocity=True, provides_effort=True, gate=cell_cfg.gate,
                                          control_period_s=cell_cfg.control_period_s)
        return XArmJointGroup(info, name or f"xarm/{side}/arm", config, **kwargs)

    # -- public views ---------------------------------------------------------------------------

    @property
    def arm(self):
        """The SDK's ``XArmAPI`` (None when closed). For inspection; do not command through it."""
        return self._arm

    @property
    def controller_codes(self) -> tuple[int, int]:
        """(error code, warning code) as last read from the controller (0: none)."""
        with self._lock:
            return self._codes

    @property
    def pending_fault(self) -> Optional[str]:
        """A fault the stream thread found that the next read/command will raise (else None)."""
        with self._lock:
            return self._fault

    def stream_stats(self) -> StreamStats:
        with self._lock:
            return self._stats.copy()

    def diagnostics(self) -> dict:
        """For ``/diagnostics``: the controller's address, its error and warning codes with the
        vendor's words (as last read), and the servo stream's statistics."""
        with self._lock:
            error, warn = self._codes
            stats = self._stats
            sent, skipped, cycles = stats.sent, stats.skipped_cycles, stats.cycles
            rate = stats.achieved_rate_hz(window_s=1.0)
            fault = self._fault
        return {"xarm_address": self.config.address,
                "controller_error": controller_error_text(error) if error else "0 (none)",
                "controller_warning": controller_warn_text(warn) if warn else "0 (none)",
                "servo_stream_rate_hz": f"{rate:.1f} (configured {self.config.stream_rate_hz:g})",
                "servo_targets_sent": sent, "stream_cycles": cycles, "stream_cycles_skipped": skipped,
                "stream_thread_fault": fault or ""}

    def recover(self) -> None:
        """The vendor's error recovery, first half (INACTIVE, after ``close()`` + ``configure()``):
        ``clean_error`` and ``clean_warn``, then check that the codes read 0; ``activate()`` does
        the rest (``motion_enable(True)``, ``set_mode(1)``, ``set_state(0)``). Remove the cause
        first: an error whose cause persists (e.g. 1: emergency stop button pressed) stays, and this
        raises DeviceFault with the vendor's words."""
        self._require({Lifecycle.INACTIVE}, "recover")
        self._guarded(self._recover, "recover")

    # -- hooks ----------------------------------------------------------------------------------

    def _on_configure(self) -> None:
        cfg = self.config
        self._reset_shared()
        arm = self._connect()
        self._arm = arm
        sock = arm.arm._stream.com  # the SDK's command socket (SDK internals: no option for this)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        arm.set_timeout(cfg.reply_timeout_s)
        if arm.axis != XARM6_AXES:
            raise XArmError(f"the controller at {cfg.address} reports {arm.axis} axes; this driver drives an xArm6")
        if cfg.collision_sensitivity is not None:
            # The register only (function 37). The SDK's set_collision_sensitivity() first waits for
            # every task (can hang forever on firmware >= 2.0.102), then calls set_state(0), which
            # would resume a stopped arm; activate()'s set_state(0) applies the value instead.
            code = arm.arm.arm_cmd.set_collis_sens(cfg.collision_sensitivity)[0]
            if code not in (0, 1, 2):  # 1/2: the reply carried the error/warning bit; read below
                raise XArmError(f"set collision sensitivity {cfg.collision_sensitivity}: {api_code_text(code)}")
        codes = self._read_codes(arm)
        self._known_codes = codes
        self._publish(self._measure(arm))
        self._closing.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name} stream", daemon=True)
        self._thread.start()

    def _on_activate(self) -> None:
        arm = self._checked_arm()
        error, warn = self._read_codes(arm)
        if error:
            raise XArmError(f"{controller_error_text(error)} is latched on the controller: remove its cause, then "
                            "close(), configure(), recover() (clean_error) and activate()")
        if warn:
            self._call(arm.clean_warn, "clean_warn")
        self._call(lambda: arm.motion_enable(True), "motion_enable(True)")
        self._call(lambda: arm.set_mode(1), "set_mode(1)")
        self._call(lambda: arm.set_state(0), "set_state(0)")
        code, state = arm.get_state()
        if code != 0:
            raise XArmError(f"get_state after set_state(0) returned {api_code_text(code)}")
        error, warn = self._read_codes(arm)
        if error or (warn and self.config.fault_on_warning):
            raise XArmError(f"activating servo mode: {self._codes_text(error, warn)}")
        if state not in _READY_STATES:
            raise XArmError(f"controller state {state_text(state)} after set_state(0): not ready to move")
        self._wait_for_servo_mode(arm)
        self._known_codes = (0, 0)
        measured = self._measure(arm)  # stream exactly where the joints are: nothing moves unasked
        with self._lock:
            self._check_fault_locked()
            self._store_locked(measured)
            self._target = self._to_axes(measured.position)
            self._streaming = True

    def _on_deactivate(self) -> None:
        with self._lock:
            self._check_fault_locked()
            if self._latest is not None:
                self._send_once = self._to_axes(self._latest.position)  # hold where the joints are
            self._streaming = False

    def _on_read(self, now: float) -> JointState:
        with self._lock:
            self._check_fault_locked()
            latest = self._latest
        if latest is None:
            raise XArmError("no joint state measured yet")
        now = time.monotonic()
        age = now - latest.stamp
        if age > self.config.max_state_age_s:
            call, since = self._in_call
            waiting = (f"{call} has waited {now - since:.3f} s for its reply from" if call
                       else "no measurement since from")
            raise XArmError(f"newest joint state is {age:.3f} s old (max_state_age_s {self.config.max_state_age_s:g} s): "
                            f"{waiting} the controller at {self.config.address} (stalled controller or lost "
                            "connection)")
        return latest

    def _on_command(self, targets: np.ndarray, now: float) -> None:
        axes = self._to_axes(targets)
        with self._lock:
            self._check_fault_locked()
            self._target = axes

    def _on_stop(self, now: float) -> None:
        with self._lock:
            self._check_fault_locked()
            if self._streaming and self._target is not None:
                self._send_once = self._target.copy()  # the gate's hold: the measured position
            self._streaming = False
            self._stop_requested = True

    def _on_close(self) -> None:
        thread, arm = self._thread, self._arm
        self._closing.set()
        try:
            if thread is not None:
                thread.join(timeout=2 * self.config.reply_timeout_s + self.config.stop_timeout_s + 1.0)
        finally:
            self._thread = None
            self._arm = None
            if arm is not None:
                _disconnect(arm)
            self._reset_shared()

    # -- SDK calls (caller's thread: configure/activate/recover; stream thread: the rest) ---------

    def _connect(self):
        """``XArmAPI.connect()`` bounded by ``connect_timeout_s`` (it runs in a helper thread; on
        timeout the half-open SDK object is disconnected, which ends the helper within ~10 s)."""
        cfg = self.config
        arm = self._sdk_factory(cfg)
        outcome: dict = {}
        previous_default = socket.getdefaulttimeout()

        def work() -> None:
            try:
                arm.connect()
                outcome["ok"] = True
            except Exception as exc:  # noqa: BLE001 - reported below with the address
                outcome["error"] = exc

        helper = threading.Thread(target=work, name=f"{self.name} connect", daemon=True)
        helper.start()
        helper.join(cfg.connect_timeout_s)
        socket.setdefaulttimeout(previous_default)  # the SDK sets a process-wide 1 s default on connect
        if helper.is_alive() or "ok" not in outcome or not arm.connected:
            try:
                arm.disconnect()
            except Exception:  # noqa: BLE001
                pass
            if helper.is_alive():
                raise XArmError(f"no answer from the xArm controller at {cfg.address}:502 within "
                                f"connect_timeout_s {cfg.connect_timeout_s:g} s (version query unanswered)")
            why = outcome.get("error", "not connected after connect()")
            raise XArmError(f"cannot connect to the xArm controller at {cfg.address}:502: {why}")
        return arm

    def _call(self, fn, what: str) -> None:
        code = fn()
        if code != 0:
            raise XArmError(f"{what} returned {api_code_text(code)}")

    def _read_codes(self, arm) -> tuple[int, int]:
        self._in_call = ("get_err_warn_code", time.monotonic())
        code, codes = arm.get_err_warn_code()
        self._in_call = ("", 0.0)
        if code != 0:
            raise XArmError(f"get_err_warn_code returned {api_code_text(code)}", code)
        error, warn = int(codes[0]), int(codes[1])
        with self._lock:
            self._codes = (error, warn)
        return error, warn

    def _measure(self, arm) -> JointState:
        t0 = time.monotonic()
        self._in_call = ("get_joint_states", t0)
        code, states = arm.get_joint_states(is_radian=True, num=3)
        t1 = time.monotonic()
        self._in_call = ("", 0.0)
        if code != 0:
            raise XArmError(f"get_joint_states returned {api_code_text(code)}", code)
        pos, vel, eff = (np.asarray(s[:XARM6_AXES], dtype=np.float64) for s in states[:3])
        slots = self._axes
        with self._lock:
            self._stats.reads += 1
            self._stats.read_rtt_s.append(t1 - t0)
        return JointState(stamp=0.5 * (t0 + t1), position=pos[slots], velocity=vel[slots], effort=eff[slots])

    def _wait_for_servo_mode(self, arm) -> None:
        """Until the report says mode 1 (servo), at most :data:`MODE_REPORT_TIMEOUT_S`. The mode is
        only reported (no query exists); the SDK checks every servo target against the reported mode
        and logs a warning per target while it differs. Skipped without a report socket."""
        expires = time.monotonic() + MODE_REPORT_TIMEOUT_S
        while arm.arm.reported and arm.mode != 1:
            if time.monotonic() > expires:
                raise XArmError(f"the controller's reports still say mode {arm.mode}, not 1 (servo), "
                                f"{MODE_REPORT_TIMEOUT_S:g} s after set_mode(1) and set_state(0)")
            time.sleep(0.005)

    def _recover(self) -> None:
        arm = self._checked_arm()
        self._call(arm.clean_error, "clean_error")
        self._call(arm.clean_warn, "clean_warn")
        error, warn = self._read_codes(arm)
        if error or warn:
            raise XArmError(f"clean_error/clean_warn did not clear {self._codes_text(error, warn)}: its cause is "
                            "still present")
        self._known_codes = (0, 0)

    # -- the stream thread ------------------------------------------------------------------------

    def _run(self) -> None:
        arm = self._arm
        period = self.config.stream_period_s
        with self._lock:
            self._stats.started = time.monotonic()
        deadline = time.monotonic()
        try:
            while True:
                closing = self._closing.is_set()
                self._cycle(arm)
                with self._lock:
                    self._stats.cycles += 1
                    self._stats.thread_cpu_s = time.thread_time()
                    pending = self._send_once is not None or self._stop_requested
                if closing and not pending:
                    return
                deadline += period
                now = time.monotonic()
                if now - deadline > period:  # more than a period late: skip, do not make up, stay on the grid
                    missed = int((now - deadline) / period)
                    with self._lock:
                        self._stats.skipped_cycles += missed
                    deadline += missed * period
                if not closing:
                    self._closing.wait(max(0.0, deadline - now))
        except _Faulted:
            return
        except Exception as exc:  # noqa: BLE001 - any SDK surprise faults the device
            self._report_fault(f"stream thread failed: {type(exc).__name__}: {exc}")

    def _cycle(self, arm) -> None:
        if not arm.connected:
            self._report_fault(f"lost the connection to the controller at {self.config.address}:502")
        with self._lock:
            once, self._send_once = self._send_once, None
            target = self._target if self._streaming else None
            stop, self._stop_requested = self._stop_requested, False
        for angles in (once, target):
            if angles is not None:
                self._send(arm, angles)
        if stop:
            self._stop(arm)
        try:
            state = self._measure(arm)
        except XArmError as exc:
            self._fault_from_code(arm, str(exc), getattr(exc, "code", None))
        self._publish(state)
        now = time.monotonic()
        if arm.arm.arm_cmd.has_err_warn or now >= self._codes_due:
            self._codes_due = now + 1.0 / self.config.error_poll_hz
            self._check_codes(arm)

    def _send(self, arm, angles: np.ndarray) -> None:
        t0 = time.monotonic()
        self._in_call = ("set_servo_angle_j", t0)
        code = arm.set_servo_angle_j([float(a) for a in angles], is_radian=True)
        t1 = time.monotonic()
        self._in_call = ("", 0.0)
        if code != 0:
            self._fault_from_code(arm, f"set_servo_angle_j returned {api_code_text(code)}", code)
        with self._lock:
            self._stats.sent += 1
            self._stats.send_times.append(t1)
            self._stats.servo_rtt_s.append(t1 - t0)

    def _stop(self, arm) -> None:
        """``set_state(4)`` until the state reads 4 (the SDK's ``emergency_stop``, bounded)."""
        expires = time.monotonic() + self.config.stop_timeout_s
        while True:
            self._in_call = ("set_state(4)", time.monotonic())
            code = arm.set_state(STOPPED_STATE)
            self._in_call = ("", 0.0)
            if code != 0:
                self._fault_from_code(arm, f"stop: set_state(4) returned {api_code_text(code)}", code)
            code, state = arm.get_state()
            if code == 0 and state == STOPPED_STATE:
                return
            if time.monotonic() > expires:
                self._report_fault(f"stop: the state reads {state_text(state)}, not 4 (stopping), after "
                                   f"{self.config.stop_timeout_s:g} s")
            time.sleep(0.05)

    def _check_codes(self, arm) -> None:
        try:
            error, warn = self._read_codes(arm)
        except XArmError as exc:
            self._fault_from_code(arm, str(exc), exc.code)
        new_error = error and error != self._known_codes[0]
        new_warn = warn and warn != self._known_codes[1] and self.config.fault_on_warning
        if new_error or new_warn:
            self._report_fault(f"controller {self._codes_text(error, warn)}")

    def _fault_from_code(self, arm, what: str, code: Optional[int] = None) -> None:
        """A call failed: add what explains it (a timeout, the controller's codes), then fault."""
        if code == REPLY_TIMEOUT:
            what = (f"{what}: no reply within reply_timeout_s {self.config.reply_timeout_s:g} s from the controller "
                    f"at {self.config.address} (stalled controller or lost connection)")
        elif arm.connected:
            try:
                error, warn = self._read_codes(arm)
                if error or warn:
                    what = f"{what}; controller {self._codes_text(error, warn)}"
            except XArmError:
                pass
        else:
            what = f"{what}; lost the connection to the controller at {self.config.address}:502"
        self._report_fault(what)

    def _report_fault(self, message: str) -> None:
        with self._lock:
            if self._fault is None:
                self._fault = message
            self._streaming = False
            self._send_once = None
            self._stop_requested = False
        self.report_fault(message)  # FAULT at once, not only at the next read or command
        if self._on_fault_cb is not None:
            try:
                self._on_fault_cb(f"{self.name}: {message}")
            except Exception:  # noqa: BLE001 - a diagnostics hook must not kill the thread's exit
                pass
        raise _Faulted()

    # -- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _codes_text(error: int, warn: int) -> str:
        parts = ([controller_error_text(error)] if error else []) + ([controller_warn_text(warn)] if warn else [])
        return "; ".join(parts) or "no error or warning"

    def _checked_arm(self):
        with self._lock:
            self._check_fault_locked()
        if self._arm is None or not self._arm.connected:
            raise XArmError(f"not connected to the controller at {self.config.address}:502")
        return self._arm

    def _check_fault_locked(self) -> None:
        if self._fault is not None:
            raise XArmError(self._fault)

    def _publish(self, state: JointState) -> None:
        with self._lock:
            self._store_locked(state)

    def _store_locked(self, state: JointState) -> None:
        if self._latest is None or state.stamp >= self._latest.stamp:
            self._latest = state

    def _to_axes(self, group_values) -> np.ndarray:
        out = np.zeros(XARM6_AXES)
        out[self._axes] = np.asarray(group_values, dtype=np.float64)
        return out

    def _reset_shared(self) -> None:
        with self._lock:
            self._latest = None
            self._target = None
            self._streaming = False
            self._send_once = None
            self._stop_requested = False
            self._fault = None
            self._codes = (0, 0)
            self._stats = StreamStats()
        self._known_codes = (0, 0)
        self._codes_due = 0.0


def _disconnect(arm, wait_s: float = 0.5) -> None:
    """``arm.disconnect()``, waiting only until its sockets are closed (its first step): the rest,
    the SDK joining its own threads, takes up to 1 s more and finishes in the background."""

    def work() -> None:
        try:
            arm.disconnect()
        except Exception:  # noqa: BLE001 - closing must not fail on a half-open connection
            pass

    helper = threading.Thread(target=work, name="xarm disconnect", daemon=True)
    helper.start()
    expires = time.monotonic() + wait_s
    while arm.connected and time.monotonic() < expires:
        time.sleep(0.002)


class _Faulted(Exception):
    """Ends the stream thread after :meth:`XArmJointGroup._report_fault` recorded why."""
