"""One lifecycle for every device (arm, hand, camera tracker; hardware, twin or mirror).

States and transitions (after ros2_control's hardware components)::

    UNCONFIGURED --configure()--> INACTIVE --activate()--> ACTIVE
         ^                          ^  |                     |
         |                          |  +----deactivate()-----+
         +--------- close() --------+-- from any state -------+
    ACTIVE/INACTIVE --stop()--> STOPPED   (reads work, commands refused; only close() leaves it)
    any error in a read or a write --> FAULT (reads and commands raise DeviceFault; only close())
    a backend thread's report_fault(reason) --> FAULT at once (from INACTIVE, ACTIVE or STOPPED)

- INACTIVE: communication is up and states can be read; commands are refused.
- ACTIVE: commands are accepted.
- STOPPED: the device holds its last measured position; a stop is final until the caller
  reconnects (``close()``, ``configure()``, ``activate()``).
- FAULT: a read or write failed, or a backend thread reported a fault (:meth:`Device.report_fault`:
  a lost connection, a vendor error code, a status bit); :attr:`Device.fault_reason` says why, in the
  vendor's words where there are any. The first reason is kept until ``close()``.

Threads: the lifecycle calls (configure, activate, ..., close) and reads/commands come from the
owner's threads; :meth:`Device.report_fault` may come from any thread (a backend's own I/O thread).
State changes are made under one lock, so a fault reported while a transition's hook runs is not
lost: the transition then ends in FAULT (and raises :class:`DeviceFault`) instead of overwriting it.

The caller passes time in (seconds): monotonic time on hardware, simulation time in the twin.
Backends implement the ``_on_*`` hooks; this class does the state checks and fault transitions.
"""

from __future__ import annotations

import enum
import threading
from typing import Optional


class Lifecycle(enum.Enum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"
    STOPPED = "stopped"
    FAULT = "fault"


class DeviceError(RuntimeError):
    """A device call is not allowed in the device's state (the message says which and why)."""


class DeviceFault(DeviceError):
    """The device is in FAULT (a read or write failed); close and reconnect it."""


class DeviceStopped(DeviceError):
    """The device was stopped; commands are refused until it is reconnected."""


class Device:
    """Base of every device: lifecycle, guards and fault handling. ``name`` appears in every error."""

    def __init__(self, name: str):
        self.name = name
        self.state = Lifecycle.UNCONFIGURED
        self.fault_reason: Optional[str] = None
        self._injected: Optional[BaseException] = None
        self._state_lock = threading.Lock()  # state and fault_reason change under it
        self._in_transition = False  # a configure/activate/deactivate hook is running
        self._pending_fault: Optional[str] = None  # reported while that hook ran

    def report_fault(self, reason: str) -> bool:
        """Put the device in FAULT now, from any thread (a backend's I/O thread that lost its
        connection or read a vendor error). ``reason`` should name the cause in the vendor's words;
        the first reason is kept. Returns True if this call put the device in FAULT. A closed device
        (UNCONFIGURED) ignores it, except while ``configure()`` runs: then configure ends in FAULT."""
        reason = str(reason)
        with self._state_lock:
            if self.state is Lifecycle.FAULT:
                return False
            if self._in_transition:
                if self._pending_fault is None:
                    self._pending_fault = reason
                return False
            if self.state is Lifecycle.UNCONFIGURED:
                return False
            self.state = Lifecycle.FAULT
            self.fault_reason = reason
            return True

    def diagnostics(self) -> dict:
        """Device-specific values for ``/diagnostics`` (vendor codes, stream statistics), as
        ``{name: value}``; backends override it. Must be cheap and never raise."""
        return {}

    def fail_next(self, exc: Optional[BaseException] = None) -> None:
        """Make the next backend call (a read or a write) raise ``exc`` (default: an ``OSError``),
        once: for tests of the FAULT path, as a lost cable would on hardware."""
        self._injected = exc if exc is not None else OSError(f"{self.name}: injected I/O failure")

    # -- lifecycle --------------------------------------------------------------------------------

    def configure(self) -> None:
        """Open communication; states become readable."""
        self._require({Lifecycle.UNCONFIGURED}, "configure")
        self._transition(self._on_configure, "configure", Lifecycle.INACTIVE)

    def activate(self) -> None:
        """Accept commands from now on (power on, servo mode, ...)."""
        self._require({Lifecycle.INACTIVE}, "activate")
        self._transition(self._on_activate, "activate", Lifecycle.ACTIVE)

    def deactivate(self) -> None:
        """Stop accepting commands; the device keeps holding where it is."""
        self._require({Lifecycle.ACTIVE}, "deactivate")
        self._transition(self._on_deactivate, "deactivate", Lifecycle.INACTIVE)

    def close(self) -> None:
        """Release the device from any state; ``configure()`` reconnects it."""
        try:
            if self.state is not Lifecycle.UNCONFIGURED:
                self._on_close()
        finally:
            with self._state_lock:
                self.state = Lifecycle.UNCONFIGURED
                self.fault_reason = None
                self._pending_fault = None

    def _enter_stopped(self) -> None:
        """STOPPED, unless a backend thread reported a fault meanwhile (FAULT wins)."""
        with self._state_lock:
            if self.state is not Lifecycle.FAULT:
                self.state = Lifecycle.STOPPED

    def _transition(self, hook, action: str, target: Lifecycle) -> None:
        """Run ``hook``; enter ``target`` unless the hook failed or a fault was reported meanwhile."""
        with self._state_lock:
            self._in_transition = True
            self._pending_fault = None
        try:
            self._guarded(hook, action)
        finally:
            with self._state_lock:
                self._in_transition = False
                pending, self._pending_fault = self._pending_fault, None
                if self.state is not Lifecycle.FAULT:
                    if pending is None:
                        self.state = target
                    else:
                        self.state = Lifecycle.FAULT
                        self.fault_reason = pending
        if pending is not None and self.state is Lifecycle.FAULT and self.fault_reason == pending:
            raise DeviceFault(f"{self.name}: cannot {action}: {pending}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- guards -----------------------------------------------------------------------------------

    def _require(self, allowed: set, action: str) -> None:
        if self.state is Lifecycle.FAULT:
            raise DeviceFault(f"{self.name}: cannot {action}: in FAULT ({self.fault_reason}); close() and reconnect")
        if self.state is Lifecycle.STOPPED and Lifecycle.STOPPED not in allowed:
            raise DeviceStopped(f"{self.name}: cannot {action}: stopped; close() and reconnect to command again")
        if self.state not in allowed:
            names = "/".join(s.value for s in allowed)
            raise DeviceError(f"{self.name}: cannot {action} while {self.state.value} (needs {names})")

    def _guarded(self, fn, action: str, *args):
        """Run a backend hook; any exception puts the device in FAULT and is re-raised as DeviceFault."""
        try:
            injected, self._injected = self._injected, None
            if injected is not None:
                raise injected
            return fn(*args)
        except DeviceError:
            raise
        except Exception as exc:  # noqa: BLE001 - every backend error is a fault by definition
            reason = f"{action} failed: {type(exc).__name__}: {exc}"
            with self._state_lock:
                if self.state is not Lifecycle.FAULT:  # else keep the first reason (a thread's report)
                    self.state = Lifecycle.FAULT
                    self.fault_reason = reason
            raise DeviceFault(f"{self.name}: {reason}") from exc

    # -- hooks for backends -----------------------------------------------------------------------

    def _on_configure(self) -> None:
        pass

    def _on_activate(self) -> None:
        pass

    def _on_deactivate(self) -> None:
        pass

    def _on_close(self) -> None:
        """Release resources; must tolerate a half-opened device (a configure that failed)."""
