"""An emulated xArm6 controller on TCP: the other end of the SDK's real protocol, so that the
unmodified ``xarm-python-sdk`` (and :class:`~handover.drivers.xarm.driver.XArmJointGroup` on it)
connects to it as to a robot. Its physics is a joint backend (:mod:`handover.drivers.xarm.joint_backends`:
the twin, or a simple rate-limited model).

Wire: :mod:`handover.drivers.xarm.protocol`. Listens on ``address``:502 (commands) and on the three
report ports 30001/30002/30003 (the SDK's ports are fixed; one emulator per address, e.g. 127.0.0.2
and 127.0.0.3 on loopback). Port 502 needs root, CAP_NET_BIND_SERVICE, or a private network
namespace (``unshare -rn``).

Emulated controller (what the SDK and the driver rely on):
- connect: ``GET_VERSION`` answers ``"6,6,<robot SN>,<box SN>,v<firmware>"`` (xArm6, type 6);
  ``GET_ROBOT_SN``, ``GET_CMDNUM``, ``GET_TCP_POSE`` (zeros: no kinematics), and the feedback
  protocol (``SET_FEEDBACK_TYPE``, ``FEEDBACK_CHECK`` answered at once with a "finished" frame: the
  emulated controller has no queued motion).
- motion: ``motion_enable`` (enables/disables the motors: a disabled arm holds where it is),
  ``set_mode`` (takes effect at the next ``set_state(0)``, as on the real controller), ``set_state``
  (0: ready, 3: pause, 4: stop, holding the measured position), ``set_servo_angle_j`` (mode 1,
  enabled, ready, no error: the backend's targets become the angles; otherwise refused with the
  status bits the SDK checks), ``get_state`` (4 when stopped, 3 paused, 1 while servo targets come
  in, else 2), ``get_err_warn_code``, ``clean_error``, ``clean_warn``, ``set_collision_sensitivity``,
  ``get_servo_angle`` and ``get_joint_states`` (position, velocity, effort from the backend).
- every reply carries the error (0x40), warning (0x20) and not-ready (0x10) bits.
- reports: normal and rich at ``report_hz`` (5 Hz like the controller), real at 100 Hz.

Fault injection: :meth:`XArmEmulator.inject_error` (default 31, collision: state 4, motors
disabled, the arm held), :meth:`inject_warning`, :meth:`drop_connections` (closes every client
socket), :meth:`refuse_connections` (the command port closed: connecting is refused), :meth:`stall` (replies held back for a
while, e.g. longer than the SDK's timeout; late replies are discarded by the SDK).

Standalone: ``python -m handover.drivers.xarm.emulator --address 127.0.0.2`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import importlib
import select
import socket
import struct
import sys
import threading
import time
from typing import Optional

import numpy as np

from handover.drivers.xarm import protocol as P

AXES = 7  # joint values on the wire: 7 (joint 7 is 0 on an xArm6)
_COLLISION = 31


class XArmEmulator:
    """One emulated controller on ``address`` whose 6 joints are ``index`` of ``backend``.

    ``backend``: a joint backend (``time``, ``read_joints``, ``set_targets``); when several
    emulators or a stepper share one, wrap it in :class:`~handover.drivers.xarm.joint_backends.LockedBackend`.
    Use as a context manager or ``start()`` / ``close()``. Introspection for tests:
    :attr:`calls` (function codes received, in order), :attr:`servo_targets` (recent servo
    targets, rad), :attr:`servo_count`, :attr:`state`, :attr:`mode`, :attr:`error`, :attr:`warn`."""

    def __init__(self, backend, index=None, *, address: str = "127.0.0.2", firmware: str = "2.6.0",
                 robot_sn: str = "XI1200EMU0001", box_sn: str = "XS1200EMU0001", report_hz: float = 5.0,
                 real_report_hz: float = 100.0, command_port: int = P.COMMAND_PORT, report_ports=None):
        self.backend = backend
        self.index = np.arange(6) if index is None else np.asarray(index)
        if self.index.shape != (6,):
            raise ValueError(f"an xArm6 emulator needs 6 joint indices, got {self.index}")
        self.address = address
        self.firmware = firmware
        self.robot_sn, self.box_sn = robot_sn, box_sn
        if len(self._version_text()) > 39:
            raise ValueError(f"version reply {self._version_text()!r} exceeds the 40-byte field (shorten the SNs)")
        self.report_hz, self.real_report_hz = float(report_hz), float(real_report_hz)
        self.command_port = command_port
        self.report_ports = dict(P.REPORT_PORTS if report_ports is None else report_ports)
        self._lock = threading.RLock()  # controller state
        # controller state
        self.enabled = False
        self._state = 0  # 0 ready, 3 paused, 4 stopped (reported 1/2 while ready: moving/idle)
        self.mode = 0
        self._pending_mode = 0
        self.error = 0
        self.warn = 0
        self.collision_sensitivity = 3
        self.teach_sensitivity = 3
        self._feedback_type = 0
        self._last_servo = -np.inf
        self.servo_count = 0
        self.servo_targets: list = []  # (monotonic time, 6 angles rad), newest last, bounded
        self.calls: list = []  # function codes received, bounded
        self._counter = 0
        # faults
        self._stall_until = 0.0
        self._command_listener: Optional[socket.socket] = None
        # sockets
        self._listeners: list[socket.socket] = []
        self._clients: list[socket.socket] = []
        self._report_clients: dict[str, list[socket.socket]] = {k: [] for k in self.report_ports}
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "XArmEmulator":
        try:
            self._command_listener = self._listen(self.command_port, self._serve_command)
            self._listeners.append(self._command_listener)
            for kind, port in self.report_ports.items():
                self._listeners.append(self._listen(port, lambda s, k=kind: self._add_report_client(k, s)))
        except OSError as exc:
            self.close()
            hint = " (port 502 needs root, CAP_NET_BIND_SERVICE or `unshare -rn`)" if exc.errno == 13 else ""
            raise OSError(exc.errno, f"xArm emulator cannot listen on {self.address}: {exc.strerror}{hint}") from None
        for kind in self.report_ports:
            self._spawn(self._report_loop, kind)
        return self

    def close(self) -> None:
        self._closed.set()
        for s in self._listeners:
            _close(s)
        self.drop_connections()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        self._listeners.clear()

    def __enter__(self) -> "XArmEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- fault injection --------------------------------------------------------------------------

    def inject_error(self, code: int = _COLLISION) -> None:
        """A controller error (default 31: collision caused abnormal current): the arm stops where it
        is (state 4) and its motors are disabled until ``clean_error``, ``motion_enable(True)``,
        ``set_mode``, ``set_state(0)``."""
        with self._lock:
            self.error = int(code)
            self._state = 4
            self.enabled = False
            self._hold()

    def inject_warning(self, code: int = 11) -> None:
        """A controller warning (default 11: cache full); ``clean_warn`` clears it."""
        with self._lock:
            self.warn = int(code)

    def drop_connections(self) -> None:
        """Close every client socket (command and reports), as a pulled cable would; new connections
        are still accepted unless :meth:`refuse_connections`."""
        with self._lock:
            clients = self._clients + [s for v in self._report_clients.values() for s in v]
            self._clients = []
            self._report_clients = {k: [] for k in self.report_ports}
        for s in clients:
            _close(s)

    def refuse_connections(self, refuse: bool = True) -> None:
        """While set, the command port is closed: connecting is refused at once (a controller that is
        off or restarting); ``refuse_connections(False)`` listens again."""
        with self._lock:
            if refuse and self._command_listener is not None:
                _close(self._command_listener)
                self._command_listener = None
            elif not refuse and self._command_listener is None and not self._closed.is_set():
                self._command_listener = self._listen(self.command_port, self._serve_command)
                self._listeners.append(self._command_listener)

    def stall(self, seconds: Optional[float]) -> None:
        """Hold every reply back until ``seconds`` from now (``None``: until ``stall(0)``); requests
        received meanwhile are answered afterwards, in order (the SDK discards the late ones)."""
        with self._lock:
            self._stall_until = np.inf if seconds is None else time.monotonic() + float(seconds)

    # -- views ------------------------------------------------------------------------------------

    @property
    def state(self) -> int:
        """The state ``get_state`` reports: 4 stopped, 3 paused, 1 moving (servo targets within the
        last 0.1 s), 2 idle."""
        with self._lock:
            if self._state in (3, 4):
                return self._state
            return 1 if time.monotonic() - self._last_servo < 0.1 else 2

    @property
    def connections(self) -> int:
        """Open command connections."""
        with self._lock:
            return len(self._clients)

    def _version_text(self) -> str:
        """GET_VERSION's answer: axes, robot type (6: xArm6), robot SN, control box SN, firmware."""
        return f"6,6,{self.robot_sn},{self.box_sn},v{self.firmware}"

    def _ready(self) -> bool:
        return self.enabled and self.error == 0 and self._state == 0

    def _status(self) -> int:
        return ((P.STATUS_ERROR if self.error else 0) | (P.STATUS_WARN if self.warn else 0)
                | (0 if self._ready() else P.STATUS_NOT_READY))

    # -- physics ----------------------------------------------------------------------------------

    def _read(self):
        js = self.backend.read_joints(self.index)
        pos = np.asarray(js.position, dtype=np.float64)
        vel = np.zeros(6) if js.velocity is None else np.asarray(js.velocity, dtype=np.float64)
        eff = np.zeros(6) if js.effort is None else np.asarray(js.effort, dtype=np.float64)
        return pos, vel, eff

    def _hold(self) -> None:
        pos, _, _ = self._read()
        self.backend.set_targets(self.index, pos)

    # -- commands ---------------------------------------------------------------------------------

    def _handle(self, req: P.Request) -> list[bytes]:
        """The reply frames to one request (empty: no reply)."""
        f, data = req.func, req.payload
        with self._lock:
            self.calls.append(f)
            del self.calls[:-10000]
            if f == P.GET_VERSION:
                return [P.reply(req, self._status(), P.padded_ascii(self._version_text(), 40))]
            if f == P.GET_ROBOT_SN:
                sn = (self.robot_sn.encode() + b"\0" + self.box_sn.encode() + b"\0").ljust(40, b"\0")
                return [P.reply(req, self._status(), sn[:40])]
            if f == P.MOTION_EN and len(data) >= 2:
                self.enabled = bool(data[1]) and self.error == 0
                if not self.enabled:
                    self._hold()
                return [P.reply(req, self._status())]
            if f == P.SET_STATE and len(data) >= 1:
                return [P.reply(req, self._set_state(data[0]))]
            if f == P.GET_STATE:
                return [P.reply(req, self._status(), bytes([self.state]))]
            if f == P.GET_CMDNUM:
                return [P.reply(req, self._status(), struct.pack(">H", 0))]
            if f == P.GET_ERROR:
                return [P.reply(req, self._status(), bytes([self.error, self.warn]))]
            if f == P.CLEAN_ERR:
                self.error = 0  # the arm stays stopped (state 4) and disabled: re-enable, set_state(0)
                return [P.reply(req, self._status())]
            if f == P.CLEAN_WAR:
                self.warn = 0
                return [P.reply(req, self._status())]
            if f == P.SET_MODE and len(data) >= 1:
                self._pending_mode = data[0]
                return [P.reply(req, self._status())]
            if f == P.MOVE_SERVOJ and len(data) >= 40:
                return [P.reply(req, self._servo(P.parse_f32(data, 10)))]
            if f in (P.SET_COLLIS_SENS, P.SET_TEACH_SENS) and len(data) >= 1:
                if data[0] > 5:
                    return [P.reply(req, self._status() | P.STATUS_INVALID)]
                setattr(self, "collision_sensitivity" if f == P.SET_COLLIS_SENS else "teach_sensitivity", data[0])
                return [P.reply(req, self._status())]
            if f == P.GET_TCP_POSE:
                return [P.reply(req, self._status(), P.f32([0.0] * 6))]
            if f == P.GET_JOINT_POS:
                pos, vel, eff = self._read()
                count = (data[0] & 0x0F) if data else 1
                values = [*pos, 0.0, *vel, 0.0, *eff, 0.0][: AXES * count]
                return [P.reply(req, self._status(), P.f32(values))]
            if f == P.SET_FEEDBACK_TYPE and len(data) >= 1:
                self._feedback_type = data[0]
                return [P.reply(req, self._status())]
            if f == P.FEEDBACK_CHECK:
                frames = [P.reply(req, self._status())]
                if self._feedback_type & 2:  # MOTION_FINISH: nothing is queued, so finished now
                    frames.append(P.feedback_frame(req, 2, 0))
                return frames
            if req.prot_id not in (2, 3):
                return []  # the SDK's optional heartbeat (protocol 1): no reply
            return [P.reply(req, self._status() | P.STATUS_INVALID)]

    def _set_state(self, state: int) -> int:
        if state == 0:
            if self.error == 0:
                self._state = 0
                self.mode = self._pending_mode
        elif state == 3:
            self._state = 3
            self._hold()
        elif state == 4:
            self._state = 4
            self._hold()
        else:
            return self._status() | P.STATUS_INVALID
        return self._status()

    def _servo(self, values: list) -> int:
        status = self._status()
        if not self._ready():
            return status
        if self.mode != 1:
            return status | P.STATUS_INVALID
        angles = np.array(values[:6])
        if not np.isfinite(angles).all():
            self.warn = 12  # user instruction parameter error
            return self._status()
        self.backend.set_targets(self.index, angles)
        now = time.monotonic()
        self._last_servo = now
        self.servo_count += 1
        self.servo_targets.append((now, angles))
        del self.servo_targets[:-5000]
        return status

    # -- sockets ----------------------------------------------------------------------------------

    def _listen(self, port: int, on_client) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(None)  # explicit: the SDK sets a process-wide 1 s default timeout
        s.bind((self.address, port))
        s.listen(8)
        self._spawn(self._accept_loop, s, on_client)
        return s

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, name=f"xarm-emulator {self.address} {fn.__name__}", daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self, server: socket.socket, on_client) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([server], [], [], 0.2)
                if not ready:
                    continue
                conn, _ = server.accept()
            except (OSError, ValueError):
                return
            if self._closed.is_set():
                _close(conn)
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            on_client(conn)

    def _serve_command(self, conn: socket.socket) -> None:
        with self._lock:
            self._clients.append(conn)
        self._spawn(self._command_loop, conn)

    def _command_loop(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([conn], [], [], 0.2)
                if not ready:
                    continue
                chunk = conn.recv(4096)
                if not chunk:
                    return
                frames, buffer = P.split_frames(buffer + chunk)
                for req in frames:
                    self._wait_stall()
                    out = self._handle(req)
                    if out:
                        conn.sendall(b"".join(out))
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if conn in self._clients:
                    self._clients.remove(conn)
            _close(conn)

    def _wait_stall(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                remaining = self._stall_until - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.02))

    def _add_report_client(self, kind: str, conn: socket.socket) -> None:
        with self._lock:
            self._report_clients[kind].append(conn)

    def _report_loop(self, kind: str) -> None:
        period = 1.0 / (self.real_report_hz if kind == "real" else self.report_hz)
        while not self._closed.wait(period):
            with self._lock:
                clients = list(self._report_clients[kind])
                if not clients:
                    continue
                packet = P.build_report(kind, self._report_data())
            for conn in clients:
                try:
                    conn.sendall(packet)
                except OSError:
                    with self._lock:
                        if conn in self._report_clients[kind]:
                            self._report_clients[kind].remove(conn)
                    _close(conn)

    def _report_data(self) -> P.ReportData:
        pos, vel, eff = self._read()
        self._counter += 1
        return P.ReportData(state=self.state, mode=self.mode, angles=[*pos, 0.0], torques=[*eff, 0.0],
                            speeds=[*vel, 0.0], error=self.error, warn=self.warn,
                            enabled_mask=0x3F if self.enabled else 0,
                            collision_sensitivity=self.collision_sensitivity,
                            teach_sensitivity=self.teach_sensitivity, version=f"v{self.firmware}",
                            counter=self._counter)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# -- standalone --------------------------------------------------------------------------------------


def _load_backend(spec: str, cfg):
    """``static``: :class:`RateLimitedJoints` over the cell's 44 joints at their default pose;
    ``MODULE:CALLABLE``: ``CALLABLE(cell_config)`` must return a joint backend indexed like
    ``cell_config.joint_names`` (e.g. ``handover.sim_twin.twin:Twin``, the MuJoCo twin)."""
    from handover.drivers.xarm.joint_backends import RateLimitedJoints  # noqa: PLC0415

    if spec == "static":
        return RateLimitedJoints(np.array(cfg.thrower.default + cfg.catcher.default))
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise SystemExit(f"--backend: expected 'static' or MODULE:CALLABLE, got {spec!r}")
    return getattr(importlib.import_module(module), attr)(cfg)


_HELP_COMMANDS = """commands on stdin (SIDE defaults to the first arm):
  collision [SIDE]       error 31 (collision): state 4, motors disabled
  error CODE [SIDE]      any controller error code
  warn CODE [SIDE]       a controller warning code
  drop [SIDE]            close every client connection
  stall SECONDS [SIDE]   hold replies back that long
  status                 state, mode, error and warning of each arm
  quit"""


def main(argv=None) -> int:
    """Run emulated controllers until ``quit`` on stdin (or EOF with ``--no-stdin``: Ctrl-C)."""
    from handover.drivers.xarm.joint_backends import LockedBackend, RealTimeStepper  # noqa: PLC0415
    from handover.runtime.cell_config import load_cell_config  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m handover.drivers.xarm.emulator", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_HELP_COMMANDS)
    parser.add_argument("--address", help="emulate the thrower arm on this address (same as --arm thrower=ADDRESS)")
    parser.add_argument("--arm", action="append", default=[], metavar="SIDE=ADDRESS",
                        help="an arm to emulate, e.g. thrower=127.0.0.2 catcher=127.0.0.3 (repeatable)")
    parser.add_argument("--backend", default="static",
                        help="'static' (joints moving at 3.14 rad/s to their targets) or MODULE:CALLABLE "
                             "called with the cell config, e.g. handover.sim_twin.twin:Twin")
    parser.add_argument("--config", default=None, help="cell configuration (default launch/cell.yaml)")
    parser.add_argument("--firmware", default="2.6.0", help="firmware version to claim (default 2.6.0)")
    parser.add_argument("--no-stdin", action="store_true", help="do not read commands from stdin")
    args = parser.parse_args(argv)
    arms = dict(a.split("=", 1) for a in args.arm if "=" in a)
    if args.address:
        arms.setdefault("thrower", args.address)
    if not arms:
        arms = {"thrower": "127.0.0.2"}
    for side in arms:
        if side not in ("thrower", "catcher"):
            parser.error(f"--arm: side must be thrower or catcher, got {side!r}")
    cfg = load_cell_config(args.config)
    backend = LockedBackend(_load_backend(args.backend, cfg))
    stepper = RealTimeStepper(backend).start() if hasattr(backend.backend, "advance") else None
    emulators = {}
    try:
        for side, address in arms.items():
            index = np.array([cfg.joint_names.index(n) for n in getattr(cfg, side).arm.joints])
            emulators[side] = XArmEmulator(backend, index, address=address, firmware=args.firmware).start()
            print(f"xArm emulator: {side} arm on {address}:502 (reports 30001-30003), backend {args.backend}", flush=True)
        print("ready", flush=True)
        if args.no_stdin:
            threading.Event().wait()
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            _command(words, emulators)
    except KeyboardInterrupt:
        pass
    finally:
        for emu in emulators.values():
            emu.close()
        if stepper is not None:
            stepper.close()
    return 0


def _command(words: list, emulators: dict) -> None:
    first = next(iter(emulators))
    try:
        op = words[0]
        if op == "status":
            for side, e in emulators.items():
                print(f"{side}: state {e.state} mode {e.mode} error {e.error} warn {e.warn} "
                      f"servo targets {e.servo_count}", flush=True)
            return
        nargs = {"collision": 0, "drop": 0, "error": 1, "warn": 1, "stall": 1}[op]
        emu = emulators[words[1 + nargs] if len(words) > 1 + nargs else first]
        if op == "collision":
            emu.inject_error(_COLLISION)
        elif op == "error":
            emu.inject_error(int(words[1]))
        elif op == "warn":
            emu.inject_warning(int(words[1]))
        elif op == "drop":
            emu.drop_connections()
        elif op == "stall":
            emu.stall(float(words[1]))
        print(f"ok: {' '.join(words)}", flush=True)
    except (KeyError, IndexError, ValueError) as exc:
        print(f"unknown command {' '.join(words)!r} ({exc}); {_HELP_COMMANDS}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
