"""Configuration of one xArm6 joint group driven through ``xarm-python-sdk``: a typed, immutable
dataclass validated when it is built (:meth:`XArmConfig.from_dict` for YAML-loaded mappings).

Every invalid value raises :class:`~handover.runtime.cell_config.ConfigError` whose message names
where the value came from (``source``: a file, and the key path) and the value itself, like the rest
of the cell configuration. Units: Hz, seconds.

Fixed by the SDK (not configurable, hence not here): the command port 502 and the report port of
each ``report_type`` (``'rich'`` 30002, ``'normal'`` 30001, ``'real'`` 30003).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from handover.runtime.cell_config import ConfigError

REPORT_TYPES = ("rich", "normal", "real")
MIN_STREAM_RATE_HZ = 100.0  # the vendor's servo example streams at 100 Hz
MAX_STREAM_RATE_HZ = 250.0  # the controller's servo cycle: faster targets are dropped


@dataclass(frozen=True)
class XArmConfig:
    """One xArm controller.

    - ``address``: the controller's IPv4 address (dotted quad; the SDK treats anything else but
      ``'localhost'`` as a serial port name, so nothing else is accepted).
    - ``stream_rate_hz``: servo targets per second sent by the driver's own thread (100-250 Hz).
    - ``report_type``: the SDK's report socket. ``'rich'`` (default) and ``'normal'`` carry the
      error and warning codes (~5 Hz); ``'real'`` (~100 Hz) has none. The driver queries joint states
      and error codes itself, so any of them works; ``'rich'`` also fills the SDK's status fields.
    - ``collision_sensitivity``: 0-5 written to the controller at configure (never while
      streaming); ``None`` leaves the controller's setting alone.
    - ``reply_timeout_s``: how long the SDK waits for each reply (the SDK's default: 2 s; motion
      enable always waits at least 5 s). A reply later than this faults the device.
    - ``connect_timeout_s``: bound on configure's connect (the SDK alone retries its version query
      for ~210 s against a controller that accepts TCP but does not answer).
    - ``max_state_age_s``: a read whose newest measurement is older than this faults the device
      (the SDK stopped answering); at least 3 stream periods.
    - ``stop_timeout_s``: how long ``stop`` retries ``set_state(4)`` until the state reads 4
      (the SDK's ``emergency_stop`` uses 3 s).
    - ``error_poll_hz``: how often the driver thread asks for the error and warning codes besides
      the error/warning bits of every reply (which trigger an immediate query).
    - ``fault_on_warning``: a controller warning (e.g. 11: cache full, 12: parameter error) faults
      the device like an error does.
    - ``forbid_uds``: must be true: on Linux the SDK otherwise connects to
      ``/tmp/xarmcontroller_uds_502`` whenever that file exists, whatever address it was given.
    - ``source``: where this configuration came from (for messages), e.g. ``"cell.yaml: thrower.arm.xarm"``.
    """

    address: str
    stream_rate_hz: float = 100.0
    report_type: str = "rich"
    collision_sensitivity: Optional[int] = None
    reply_timeout_s: float = 2.0
    connect_timeout_s: float = 10.0
    max_state_age_s: float = 0.25
    stop_timeout_s: float = 3.0
    error_poll_hz: float = 10.0
    fault_on_warning: bool = True
    forbid_uds: bool = True
    source: str = dataclasses.field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def stream_period_s(self) -> float:
        """Time between two servo targets (s)."""
        return 1.0 / self.stream_rate_hz

    @staticmethod
    def from_dict(raw: Any, source: str = "<memory>") -> "XArmConfig":
        """Build from a parsed YAML mapping; ``source`` names the file and key (e.g.
        ``"launch/cell.yaml: thrower.arm.xarm"``). Unknown keys and wrong types are refused."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a mapping of xArm settings (got {raw!r})")
        fields = {f.name: f for f in dataclasses.fields(XArmConfig) if f.name != "source"}
        for key in raw:
            if key not in fields:
                raise ConfigError(f"{source}.{key}: unknown key; expected one of {sorted(fields)}")
        if "address" not in raw:
            raise ConfigError(f"{source}.address: missing key (the controller's IPv4 address)")
        values = {}
        for key, value in raw.items():
            values[key] = _typed(key, value, source)
        return XArmConfig(**values, source=source)


_FLOAT_KEYS = ("stream_rate_hz", "reply_timeout_s", "connect_timeout_s", "max_state_age_s", "stop_timeout_s",
               "error_poll_hz")


def _typed(key: str, value: Any, source: str) -> Any:
    """Type check of one YAML value (the range checks are in :func:`_validate`)."""
    where = f"{source}.{key}"
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number (got {value!r})")
        return float(value)
    if key in ("fault_on_warning", "forbid_uds"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false (got {value!r})")
        return value
    if key == "collision_sensitivity":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}: expected an integer 0-5 or null (got {value!r})")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string (got {value!r})")
    return value


def _validate(c: XArmConfig) -> None:
    def fail(key: str, problem: str) -> None:
        raise ConfigError(f"{c.source}.{key}: {problem} (got {getattr(c, key)!r})")

    try:
        address = ipaddress.IPv4Address(c.address) if isinstance(c.address, str) else None
    except ValueError:
        address = None
    if address is None:
        fail("address", "expected the controller's IPv4 address, e.g. 192.168.1.185 (the SDK takes "
                        "anything else for a serial port)")
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        fail("address", "not a unicast IPv4 address")
    for key in _FLOAT_KEYS:
        value = getattr(c, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(key, "expected a finite number")
    if not MIN_STREAM_RATE_HZ <= c.stream_rate_hz <= MAX_STREAM_RATE_HZ:
        fail("stream_rate_hz", f"must be {MIN_STREAM_RATE_HZ:g}-{MAX_STREAM_RATE_HZ:g} Hz (the controller's "
                               "servo mode takes at most 250 targets per second)")
    if c.report_type not in REPORT_TYPES:
        fail("report_type", f"expected one of {list(REPORT_TYPES)}")
    if c.collision_sensitivity is not None and (isinstance(c.collision_sensitivity, bool)
                                                or not isinstance(c.collision_sensitivity, int)
                                                or not 0 <= c.collision_sensitivity <= 5):
        fail("collision_sensitivity", "expected an integer 0-5 (0: collision detection off) or null")
    if not 0.05 <= c.reply_timeout_s <= 10.0:
        fail("reply_timeout_s", "must be 0.05-10 s")
    if not 1.0 <= c.connect_timeout_s <= 300.0:
        fail("connect_timeout_s", "must be 1-300 s")
    if not 3.0 / c.stream_rate_hz <= c.max_state_age_s <= 10.0:
        fail("max_state_age_s", f"must be at least 3 stream periods ({3.0 / c.stream_rate_hz:.3f} s) and at most 10 s")
    if not 0.1 <= c.stop_timeout_s <= 10.0:
        fail("stop_timeout_s", "must be 0.1-10 s")
    if not 1.0 <= c.error_poll_hz <= c.stream_rate_hz:
        fail("error_poll_hz", f"must be 1 Hz to the stream rate ({c.stream_rate_hz:g} Hz)")
    if not isinstance(c.fault_on_warning, bool):
        fail("fault_on_warning", "expected true or false")
    if c.forbid_uds is not True:
        fail("forbid_uds", "must be true: without it the SDK connects to /tmp/xarmcontroller_uds_502 whenever "
                           "that file exists, whatever address it was given")
