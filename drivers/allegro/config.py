"""Configuration of one Allegro Hand V4 driver: a typed, immutable, validated dataclass.

Build it with :meth:`AllegroConfig.from_dict` (a parsed YAML mapping; every bad value raises
:class:`AllegroConfigError` naming the source, the key and the value) or directly (``__post_init__``
runs the same checks, the source being ``<code>``).

Per-joint values (``kp``, ``kd``, ``pwm_limit``) are in **Allegro numbering** (joint_0.0 ...
joint_15.0: index, middle, ring, thumb), never in the runtime's slot order. In a mapping they may be
given as a list of 16 numbers in that numbering, or as ``{joint_k.0: value}`` overrides of the
defaults by name.

Units: gains in PWM counts per rad (kp) and per rad/s (kd) as in the vendor's PD node (its torque
``(kp e - kd v) / 1200`` times 1200 is the PWM duty); PWM in counts (1200 = 100 %); seconds;
degrees Celsius.

Defaults are the vendor's (``allegro_hand_ros_v4``: ``allegro_node_pd.cpp`` gains,
``AllegroHandDrv.cpp`` PWM limits and 3 ms period) unless said otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from handover.drivers.allegro import protocol as proto
from handover.runtime.cell_config import ConfigError

INTERFACES = ("socketcan", "pcan", "virtual", "udp_multicast")
SIDES = ("right", "left")

# Vendor defaults, Allegro numbering (index, middle, ring: roll, proximal, middle, distal; thumb).
DEFAULT_KP = (600.0, 600.0, 600.0, 1000.0) * 3 + (1000.0, 1000.0, 1000.0, 600.0)
DEFAULT_KD = (15.0, 20.0, 15.0, 15.0) * 3 + (30.0, 20.0, 20.0, 15.0)
DEFAULT_PWM_LIMIT = (375.0, 675.0, 450.0, 285.0) * 3 + (525.0, 405.0, 270.0, 270.0)
# The vendor's low-pass on position and velocity: f = a f + b_prev x_prev + b_cur x_cur.
VENDOR_FILTER = (0.6, 0.198, 0.198)


class AllegroConfigError(ConfigError):
    """An Allegro driver configuration value is invalid; the message names source, key and value."""


def _per_joint(default: tuple) -> Any:
    return field(default=default, metadata={"per_joint": True})


@dataclass(frozen=True)
class AllegroConfig:
    """One hand on one CAN channel.

    - ``interface``/``channel``: python-can's. socketcan: ``can0``; pcan: ``PCAN_USBBUS1``; virtual:
      any name (one process only); udp_multicast: an IPv4 group such as ``239.74.163.2`` (only
      inside a private network namespace: it cannot pick a network interface).
    - ``bitrate``: bit/s, passed to interfaces that set it (pcan); socketcan's is set by the OS.
    - ``udp_port``: the udp_multicast port.
    - ``device_id``: 0..3, the low two bits of every arbitration id.
    - ``hand_side``: the side the hand must report in its hand-info reply (configure refuses a
      mismatch: the gains and limits of the other hand would be wrong).
    - ``kp``/``kd``/``pwm_limit``: per joint, Allegro numbering (see the module doc).
    - ``loop_period_s``: the position stream period the driver asks for (set period, whole ms);
      the PD loop runs once per complete cycle of four finger frames, i.e. at this period.
    - ``filter``: ``(a, b_prev, b_cur)`` of the vendor's low-pass on position and velocity.
    - ``position_timeout_s``: FAULT when a finger has sent no position frame for this long (s):
      lost frames and a silent bus are detected within this plus one watchdog tick (``watchdog_s``).
    - ``status_period_s``: hand-info request period (s): status bits and temperature are checked
      at this rate; ``0`` requests it at start-up only (the vendor's behaviour).
    - ``reply_timeout_s``: how long configure waits for the hand's replies (s), and how old an
      unanswered hand-info request may get before FAULT.
    - ``temperature_limit_c``: FAULT when the reported temperature exceeds it (deg C), on top of
      the firmware's own over-temperature bit. Our choice, not a vendor value.
    """

    interface: str
    channel: str
    hand_side: str
    device_id: int = 0
    bitrate: int = 1_000_000
    udp_port: int = 43113
    kp: tuple[float, ...] = _per_joint(DEFAULT_KP)
    kd: tuple[float, ...] = _per_joint(DEFAULT_KD)
    pwm_limit: tuple[float, ...] = _per_joint(DEFAULT_PWM_LIMIT)
    loop_period_s: float = 0.003
    filter: tuple[float, float, float] = VENDOR_FILTER
    position_timeout_s: float = 0.05
    watchdog_s: float = 0.005
    status_period_s: float = 0.1
    reply_timeout_s: float = 0.5
    temperature_limit_c: float = 65.0
    source: str = field(default="<code>", compare=False, metadata={"not_a_key": True})

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived ------------------------------------------------------------------------------------

    @property
    def period_ms(self) -> int:
        """The position period sent in the set-period command, ms."""
        return int(round(self.loop_period_s * 1000.0))

    @property
    def filter_dc_gain(self) -> float:
        """Steady-state gain of the low-pass: ``(b_prev + b_cur) / (1 - a)`` (0.99 for the vendor's)."""
        a, b0, b1 = self.filter
        return (b0 + b1) / (1.0 - a)

    def bus_kwargs(self) -> dict:
        """Keyword arguments for ``can.Bus`` (interface and channel from this config)."""
        kwargs: dict = {"interface": self.interface, "channel": self.channel}
        if self.interface == "pcan":
            kwargs["bitrate"] = self.bitrate
        elif self.interface == "udp_multicast":
            kwargs.update(port=self.udp_port, fd=False)
        return kwargs

    # -- loading ------------------------------------------------------------------------------------

    @staticmethod
    def from_dict(raw: Mapping, source: str = "<memory>") -> "AllegroConfig":
        """Validate a parsed mapping (e.g. a YAML section); ``source`` names it in errors
        (``launch/cell.yaml: thrower.hand.allegro``)."""
        if not isinstance(raw, Mapping):
            raise AllegroConfigError(f"{source}: expected a mapping for the Allegro driver, got {raw!r}")
        fields = {f.name: f for f in dataclasses.fields(AllegroConfig) if not f.metadata.get("not_a_key")}
        unknown = sorted(str(k) for k in raw if k not in fields)
        if unknown:
            raise AllegroConfigError(f"{source}.{unknown[0]}: unknown key; expected one of {sorted(fields)}")
        values: dict = {}
        for name, f in fields.items():
            if name not in raw:
                if f.default is dataclasses.MISSING:
                    raise AllegroConfigError(f"{source}.{name}: missing key")
                continue
            value = raw[name]
            if f.metadata.get("per_joint"):
                value = _joint_values(value, f.default, f"{source}.{name}")
            elif name == "filter" and isinstance(value, list):
                value = tuple(value)
            values[name] = value
        return AllegroConfig(**values, source=source)


def _joint_values(value: Any, default: tuple, key: str) -> tuple:
    """A list of 16 (Allegro numbering) or a ``{joint_k.0: value}`` mapping over ``default``."""
    if isinstance(value, Mapping):
        out = list(default)
        for name, v in value.items():
            try:
                number = proto.allegro_number(str(name))
            except ValueError as exc:
                raise AllegroConfigError(f"{key}.{name}: {exc}") from None
            out[number] = v
        return tuple(out)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise AllegroConfigError(f"{key}: expected a list of 16 numbers (joint_0.0 ... joint_15.0) "
                             f"or a mapping joint name -> number (got {value!r})")


def _fail(cfg: AllegroConfig, key: str, problem: str, value: Any) -> None:
    raise AllegroConfigError(f"{cfg.source}.{key}: {problem} (got {value!r})")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _validate(cfg: AllegroConfig) -> None:
    if cfg.interface not in INTERFACES:
        _fail(cfg, "interface", f"expected one of {list(INTERFACES)}", cfg.interface)
    if not isinstance(cfg.channel, str) or not cfg.channel:
        _fail(cfg, "channel", "expected a non-empty string (can0, PCAN_USBBUS1, a virtual name, a group IP)",
              cfg.channel)
    if cfg.hand_side not in SIDES:
        _fail(cfg, "hand_side", f"expected one of {list(SIDES)}", cfg.hand_side)
    for name, low, high in (("device_id", 0, 3), ("bitrate", 10_000, 1_000_000), ("udp_port", 1, 65535)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _fail(cfg, name, f"expected an integer in [{low}, {high}]", value)
    for name in ("kp", "kd", "pwm_limit"):
        values = getattr(cfg, name)
        if len(values) != proto.DOF:
            _fail(cfg, name, f"expected {proto.DOF} values (joint_0.0 ... joint_15.0)", values)
        for k, v in enumerate(values):
            where = f"{name}[{k}] ({proto.joint_label(k)})"
            if not _number(v) or v < 0:
                _fail(cfg, where, "expected a finite number >= 0", v)
            if name == "pwm_limit" and not 0 < v <= proto.PWM_FULL_SCALE:
                _fail(cfg, where, f"expected a PWM limit in (0, {proto.PWM_FULL_SCALE}]", v)
        object.__setattr__(cfg, name, tuple(float(v) for v in values))
    period = cfg.loop_period_s
    if not _number(period) or not 0.001 <= period <= 0.065 or abs(period * 1000 - round(period * 1000)) > 1e-9:
        _fail(cfg, "loop_period_s", "expected a whole number of milliseconds in [0.001, 0.065] s "
                                    "(the set-period command takes ms)", period)
    if not isinstance(cfg.filter, tuple) or len(cfg.filter) != 3 or not all(_number(v) for v in cfg.filter):
        _fail(cfg, "filter", "expected three numbers (a, b_prev, b_cur)", cfg.filter)
    a, b0, b1 = cfg.filter
    if not (0 <= a < 1 and b0 >= 0 and b1 >= 0 and b0 + b1 > 0 and a + b0 + b1 <= 1 + 1e-9):
        _fail(cfg, "filter", "expected 0 <= a < 1, b_prev, b_cur >= 0, b_prev + b_cur > 0, a + b_prev + b_cur <= 1",
              cfg.filter)
    object.__setattr__(cfg, "filter", tuple(float(v) for v in cfg.filter))
    for name in ("position_timeout_s", "watchdog_s", "reply_timeout_s", "temperature_limit_c"):
        value = getattr(cfg, name)
        if not _number(value) or value <= 0:
            _fail(cfg, name, "expected a finite number > 0", value)
    if not _number(cfg.status_period_s) or cfg.status_period_s < 0:
        _fail(cfg, "status_period_s", "expected a finite number >= 0 (0: at start-up only)", cfg.status_period_s)
    if cfg.position_timeout_s < 3 * cfg.loop_period_s:
        _fail(cfg, "position_timeout_s", f"expected at least 3 loop periods ({3 * cfg.loop_period_s} s)",
              cfg.position_timeout_s)
