"""The device registry: every device of the cell built from the config's ``devices:`` section.

One place knows which class serves which backend (one interface per kind of device, with the hardware
drivers, their emulators' counterparts and the twin as peers):

=========  ======================================  ========================================  ===========================
kind       xarm / allegro / realsense (hardware)   mirror                                    twin
=========  ======================================  ========================================  ===========================
arm        :class:`~.xarm.XArmJointGroup`          :class:`~.mirror.MirrorJointGroup`         the twin node's device
hand       :class:`~.allegro.AllegroHand`          :class:`~.mirror.MirrorJointGroup`         the twin node's device
tracker    :class:`~.realsense.driver.RealSenseTracker`  :class:`~.mirror.MirrorObjectTracker`  the twin node's device
=========  ======================================  ========================================  ===========================

- :func:`validate_devices` checks every entry's parameters with its backend's own config class
  (:class:`~.xarm.config.XArmConfig`, :class:`~.allegro.config.AllegroConfig`,
  :class:`~.realsense.config.RealSenseConfig`) and across devices (two arms on one address, two
  hands on one CAN channel and id). Errors are :class:`~handover.runtime.cell_config.ConfigError`
  naming the file, the key and the value. Called wherever a config is loaded for a graph
  (:func:`handover.runtime.node_graph.build_graph`) and by ``handover config``.
- :func:`build_devices` makes the device objects (nothing connects yet); :func:`configure_all`
  configures them, and if one fails closes every one and raises :class:`DeviceStartError` naming
  the device and where it was looked for (address, CAN channel, camera serial) with the vendor's
  words. :meth:`CellDevices.close` closes every device (also after a failure).

Parameters beyond each config class (our choices):

- mirror joint groups: ``lag_s`` (s, >= 0), start at the group's ``default`` pose; a mirror
  tracker: ``latency_s`` (s, >= 0) and it never sees the object.
- Allegro PD gains per hand serial: ``<calibration_dir>/allegro_<serial>.yaml`` with ``serial``
  (must match), ``kp`` and/or ``kd`` (16 values in Allegro numbering, or ``{joint_k.0: value}``),
  loaded at configure with the serial the hand reports (no file: the config's gains).
- The D435's ``calibration_dir`` defaults to ``devices.calibration_dir``.

Clocks: every hardware driver here stamps on ``time.monotonic`` and wants ``now`` on it
(:attr:`CellDevices.clocks`); the twin's devices keep simulation time; mirrors take the node clock.

Importing this module imports no vendor library: each backend's module is imported when an entry
uses it. Where a vendor library is missing, :func:`validate_devices` leaves that entry unchecked
(``DeviceSpec.unchecked`` says why) and :func:`build_devices` refuses it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import yaml

from handover.drivers.device import Device, DeviceError, Lifecycle
from handover.runtime.cell_config import CellConfig, ConfigError, DeviceConfig

JOINT_GROUPS = (("thrower", "arm"), ("thrower", "hand"), ("catcher", "arm"), ("catcher", "hand"))
TRACKER = ("", "tracker")
HARDWARE_BACKENDS = ("xarm", "allegro", "realsense")
ALLEGRO_GAINS_FILE = "allegro_{serial}.yaml"
_LIBRARIES = {"xarm": ("xarm", "xarm-python-sdk"), "allegro": ("can", "python-can"),
              "realsense": ("pyrealsense2", "pyrealsense2")}


class DeviceStartError(DeviceError):
    """A device of the cell could not be brought up; the message names it, where it was looked
    for and the vendor's words. Every device of the cell was closed before this was raised."""


@dataclass(frozen=True)
class MirrorParams:
    """A mirror's parameters: ``lag_s`` (joint groups, s) or ``latency_s`` (tracker, s)."""

    lag_s: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class DeviceSpec:
    """One validated ``devices:`` entry. ``config``: the backend's config object (None for the
    twin, or when ``unchecked`` says why it could not be checked here)."""

    side: str  # thrower | catcher | "" (tracker)
    group: str  # arm | hand | tracker
    backend: str
    config: Any
    key: str  # devices.thrower.arm
    unchecked: str = ""

    @property
    def label(self) -> str:
        return f"{self.side}/{self.group}" if self.side else self.group

    def where(self) -> str:
        """Where the device is looked for, for messages."""
        c = self.config
        if self.backend == "xarm" and c is not None:
            return f"xArm controller at {c.address}:502"
        if self.backend == "allegro" and c is not None:
            return f"Allegro hand on {c.interface}:{c.channel} device id {c.device_id}"
        if self.backend == "realsense" and c is not None:
            return f"D435 serial {c.serial}"
        return f"{self.backend} backend"


@dataclass(frozen=True)
class DeviceSpecs:
    """Every device entry of one config, validated (:func:`validate_devices`)."""

    source: Path
    calibration_dir: Path
    entries: Mapping[tuple[str, str], DeviceSpec]

    def backends(self) -> set[str]:
        return {s.backend for s in self.entries.values()}

    def replace(self, key: tuple[str, str], **changes) -> "DeviceSpecs":
        """A copy with one entry's fields changed (e.g. ``config=`` an emulator's connection)."""
        entries = dict(self.entries)
        entries[key] = dataclasses.replace(entries[key], **changes)
        return dataclasses.replace(self, entries=entries)


# -- validation --------------------------------------------------------------------------------------


def validate_devices(cfg: CellConfig) -> DeviceSpecs:
    """Check every ``devices:`` entry of ``cfg`` with its backend's config class and across devices;
    raises :class:`ConfigError` naming ``cfg.source``, the key and the value."""
    dev = cfg.devices
    entries = {}
    for (side, group), entry in dev.entries().items():
        entries[(side, group)] = _spec(cfg, side, group, entry)
    specs = DeviceSpecs(cfg.source, dev.calibration_dir, entries)
    _check_unique(cfg, specs)
    return specs


def _where(cfg: CellConfig, key: str) -> str:
    return f"{cfg.source}: {key}"


def _spec(cfg: CellConfig, side: str, group: str, entry: DeviceConfig) -> DeviceSpec:
    backend, params, key = entry.backend, entry.params, entry.key
    source = _where(cfg, f"{key}.{backend}")
    if backend == "twin":
        if params:
            raise ConfigError(f"{source}: the twin backend takes no parameters (got {dict(params)!r})")
        return DeviceSpec(side, group, backend, None, key)
    if backend == "mirror":
        return DeviceSpec(side, group, backend, _mirror_params(params, source, group), key)
    module, package = _LIBRARIES[backend]
    if importlib.util.find_spec(module) is None:  # found, not imported (the xArm SDK prints on import)
        return DeviceSpec(side, group, backend, None, key,
                          unchecked=f"{package} is not installed (pip install 'handover[hardware]')")
    if backend == "xarm":
        from handover.drivers.xarm.config import XArmConfig

        return DeviceSpec(side, group, backend, XArmConfig.from_dict(params, source=source), key)
    if backend == "allegro":
        from handover.drivers.allegro.config import AllegroConfig

        return DeviceSpec(side, group, backend, AllegroConfig.from_dict(params, source=source), key)
    from handover.drivers.realsense.config import RealSenseConfig, RealSenseConfigError

    raw = dict(params)
    raw.setdefault("calibration_dir", str(cfg.devices.calibration_dir))
    try:
        config = RealSenseConfig.from_mapping(raw, source=source, base_dir=Path(cfg.source).parent)
    except RealSenseConfigError as exc:
        raise ConfigError(str(exc)) from None
    return DeviceSpec(side, group, backend, config, key)


def _mirror_params(params: Mapping, source: str, group: str) -> MirrorParams:
    allowed = ("latency_s",) if group == "tracker" else ("lag_s",)
    for k, v in params.items():
        if k not in allowed:
            raise ConfigError(f"{source}.{k}: unknown key; expected one of {list(allowed)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{source}.{k}: expected a finite number >= 0 s (got {v!r})")
    return MirrorParams(**{k: float(v) for k, v in params.items()})


def _check_unique(cfg: CellConfig, specs: DeviceSpecs) -> None:
    seen: dict[Any, str] = {}
    for spec in specs.entries.values():
        c = spec.config
        if c is None:
            continue
        if spec.backend == "xarm":
            ident, what = ("xarm", c.address), f"address {c.address}"
        elif spec.backend == "allegro":
            ident, what = ("allegro", c.interface, c.channel, c.device_id), \
                f"CAN {c.interface}:{c.channel} device id {c.device_id}"
        else:
            continue
        if ident in seen:
            raise ConfigError(f"{_where(cfg, spec.key)}.{spec.backend}: {what} is also {seen[ident]}'s: one device each")
        seen[ident] = spec.key


def describe(specs: DeviceSpecs) -> list[str]:
    """One line per device, for ``handover config``."""
    lines = []
    for spec in specs.entries.values():
        text = f"{spec.key}: {spec.backend}"
        if spec.backend in HARDWARE_BACKENDS:
            text += f" ({spec.where()})" if spec.config is not None else f" (not checked: {spec.unchecked})"
        lines.append(text)
    lines.append(f"devices.calibration_dir: {specs.calibration_dir}")
    return lines


# -- calibration files -------------------------------------------------------------------------------


def allegro_gains_loader(calibration_dir: Path, base: Any) -> Callable[[str], Optional[dict]]:
    """``gains_for_serial`` for :class:`~handover.drivers.allegro.driver.AllegroHand`: the kp/kd of
    ``<calibration_dir>/allegro_<serial>.yaml`` (None when there is no such file), checked with the
    hand's config class ``base`` (an AllegroConfig) and naming the file in every error."""

    def load(serial: str) -> Optional[dict]:
        path = Path(calibration_dir) / ALLEGRO_GAINS_FILE.format(serial=serial)
        if not path.is_file():
            return None
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the PD gains as YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with serial, kp and/or kd (got {raw!r})")
        unknown = sorted(str(k) for k in raw if k not in ("serial", "kp", "kd"))
        if unknown:
            raise ConfigError(f"{path}: {unknown[0]}: unknown key; expected serial, kp, kd")
        if str(raw.get("serial")) != serial:
            raise ConfigError(f"{path}: serial: expected {serial!r} (the hand this file is named after) "
                              f"(got {raw.get('serial')!r})")
        gains = {k: raw[k] for k in ("kp", "kd") if k in raw}
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if not f.metadata.get("not_a_key")}
        type(base).from_dict({**fields, **gains}, source=str(path))  # the same checks as the config's
        return gains

    return load


# -- building ----------------------------------------------------------------------------------------


@dataclass
class CellDevices:
    """The cell's devices: ``joint_groups[(side, group)]``, ``tracker``; ``clocks[name]`` is the
    clock each device wants its ``now`` on (None: the driver node's clock); ``tracker_rate_hz``:
    how often to poll the tracker (None: the twin's frame events). :meth:`close` closes every
    device (the twin's too: closing them only resets their lifecycle)."""

    joint_groups: dict
    tracker: Any
    specs: Optional[DeviceSpecs] = None
    clocks: dict = field(default_factory=dict)
    tracker_rate_hz: Optional[float] = None

    def all(self) -> list:
        return [*self.joint_groups.values(), self.tracker]

    def clock(self, device) -> Optional[Callable[[], float]]:
        return self.clocks.get(device.name)

    def spec_of(self, device) -> Optional[DeviceSpec]:
        for key, dev in [*self.joint_groups.items(), (TRACKER, self.tracker)]:
            if dev is device and self.specs is not None:
                return self.specs.entries[key]
        return None

    def close(self) -> None:
        """Close every device (each one even if another fails); raises the first error."""
        errors = []
        for dev in self.all():
            try:
                dev.close()
            except Exception as exc:  # noqa: BLE001 - the others must still close
                errors.append(exc)
        if errors:
            raise errors[0]


def build_devices(cfg: CellConfig, specs: DeviceSpecs, *, twin=None, twin_clock: Optional[Callable[[], float]] = None,
                  extra: Optional[Mapping[tuple[str, str], dict]] = None) -> CellDevices:
    """The device objects of ``specs`` (not configured). ``twin``: the twin's devices (a
    :class:`~handover.sim_twin.devices.TwinDevices`) for entries whose backend is ``twin``, with
    ``twin_clock`` their clock; ``extra[(side, group)]``: keyword arguments for a hardware driver's
    constructor (an emulator's ``device``, ``wall_clock``)."""
    extra = dict(extra or {})
    groups, clocks = {}, {}
    for key in (*JOINT_GROUPS, TRACKER):
        spec = specs.entries[key]
        if spec.backend == "twin":
            if twin is None:
                raise ConfigError(f"{_where(cfg, spec.key)}.backend: twin needs the twin node in this process "
                                  "(--backend sim or emulated); with --backend real, name the hardware or mirror")
            device = twin.tracker if key == TRACKER else twin.joint_groups[key]
            clocks[device.name] = twin_clock
        else:
            if spec.config is None:
                raise ConfigError(f"{_where(cfg, spec.key)}.backend: {spec.backend}: {spec.unchecked}")
            device = _make(cfg, specs, spec, extra.get(key, {}))
            clocks[device.name] = None if spec.backend == "mirror" else time.monotonic
        groups[key] = device
    tracker = groups.pop(TRACKER)
    tspec = specs.entries[TRACKER]
    rate = None if tspec.backend == "twin" else (
        2.0 * tspec.config.color_fps if tspec.backend == "realsense" else cfg.twin.tracker.rate_hz)
    return CellDevices(groups, tracker, specs, clocks, rate)


def _make(cfg: CellConfig, specs: DeviceSpecs, spec: DeviceSpec, kwargs: dict) -> Device:
    from handover.drivers.joint_group import JointGroupInfo

    if spec.group != "tracker":
        group_cfg = getattr(getattr(cfg, spec.side), spec.group)
    if spec.backend == "mirror":
        if spec.group == "tracker":
            from handover.drivers.mirror import MirrorObjectTracker

            return MirrorObjectTracker(lambda t: None, name="mirror/object_tracker", latency_s=spec.config.latency_s)
        from handover.drivers.mirror import MirrorJointGroup

        info = JointGroupInfo.from_config(group_cfg, provides_velocity=True, provides_effort=False, gate=cfg.gate,
                                          control_period_s=cfg.control_period_s)
        return MirrorJointGroup(info, f"mirror/{spec.side}/{spec.group}", np.array(group_cfg.default),
                                lag_s=spec.config.lag_s)
    if spec.backend == "xarm":
        from handover.drivers.xarm.driver import XArmJointGroup

        return XArmJointGroup.from_cell_config(cfg, spec.side, spec.config, **kwargs)
    if spec.backend == "allegro":
        from handover.drivers.allegro.driver import AllegroHand

        kwargs.setdefault("gains_for_serial", allegro_gains_loader(specs.calibration_dir, spec.config))
        return AllegroHand.from_cell(cfg, spec.side, spec.config, **kwargs)
    from handover.drivers.realsense.driver import RealSenseTracker

    return RealSenseTracker(spec.config, name=f"realsense/{spec.config.serial}", **kwargs)


def configure_all(devices: CellDevices) -> None:
    """Configure every device that is not yet (connect, start-up sequences, calibration files). If
    one fails, every device is closed and :class:`DeviceStartError` names it, where it was looked
    for and the vendor's words."""
    for device in devices.all():
        if device.state is not Lifecycle.UNCONFIGURED:
            continue
        try:
            device.configure()
        except DeviceError as exc:
            spec = devices.spec_of(device)
            where = f" ({spec.key}: {spec.where()})" if spec is not None else ""
            try:
                devices.close()
            except Exception:  # noqa: BLE001 - the start error is the one to report
                pass
            raise DeviceStartError(f"{device.name}{where} did not come up: {exc}") from exc
