"""One lifecycle for every device (arm, hand, camera tracker; hardware, twin or mirror).

States and transitions (after ros2_control's hardware components)::

    UNCONFIGURED --configure()--> INACTIVE --activate()--> ACTIVE
         ^                          ^  |                     |
         |                          |  +----deactivate()-----+
         +--------- close() --------+-- from any state -------+
    ACTIVE/INACTIVE --stop()--> STOPPED   (reads work, commands refused; only close() leaves it)
    any error in a read or a write --> FAULT (reads and commands raise DeviceFault; only close())

- INACTIVE: communication is up and states can be read; commands are refused.
- ACTIVE: commands are accepted.
- STOPPED: the device holds its last measured position; a stop is final until the caller
  reconnects (``close()``, ``configure()``, ``activate()``).
- FAULT: a read or write failed; :attr:`Device.fault_reason` says why.

The caller passes time in (seconds): monotonic time on hardware, simulation time in the twin.
Backends implement the ``_on_*`` hooks; this class does the state checks and fault transitions.
"""

from __future__ import annotations

import enum
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

    def fail_next(self, exc: Optional[BaseException] = None) -> None:
        """Make the next backend call (a read or a write) raise ``exc`` (default: an ``OSError``),
        once: for tests of the FAULT path, as a lost cable would on hardware."""
        self._injected = exc if exc is not None else OSError(f"{self.name}: injected I/O failure")

    # -- lifecycle --------------------------------------------------------------------------------

    def configure(self) -> None:
        """Open communication; states become readable."""
        self._require({Lifecycle.UNCONFIGURED}, "configure")
        self._guarded(self._on_configure, "configure")
        self.state = Lifecycle.INACTIVE

    def activate(self) -> None:
        """Accept commands from now on (power on, servo mode, ...)."""
        self._require({Lifecycle.INACTIVE}, "activate")
        self._guarded(self._on_activate, "activate")
        self.state = Lifecycle.ACTIVE

    def deactivate(self) -> None:
        """Stop accepting commands; the device keeps holding where it is."""
        self._require({Lifecycle.ACTIVE}, "deactivate")
        self._guarded(self._on_deactivate, "deactivate")
        self.state = Lifecycle.INACTIVE

    def close(self) -> None:
        """Release the device from any state; ``configure()`` reconnects it."""
        try:
            if self.state is not Lifecycle.UNCONFIGURED:
                self._on_close()
        finally:
            self.state = Lifecycle.UNCONFIGURED
            self.fault_reason = None

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
            self.state = Lifecycle.FAULT
            self.fault_reason = f"{action} failed: {type(exc).__name__}: {exc}"
            raise DeviceFault(f"{self.name}: {self.fault_reason}") from exc

    # -- hooks for backends -----------------------------------------------------------------------

    def _on_configure(self) -> None:
        pass

    def _on_activate(self) -> None:
        pass

    def _on_deactivate(self) -> None:
        pass

    def _on_close(self) -> None:
        """Release resources; must tolerate a half-opened device (a configure that failed)."""
