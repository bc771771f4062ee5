"""The cell configuration: one YAML file, loaded into typed, immutable dataclasses.

Every bad value is rejected at load time with a :class:`ConfigError` whose message names the file,
the key path (for example ``thrower.arm.lower[2]``) and the offending value.

Units: metres, radians, Hz. Positions are in the world frame (z up).
The default file is ``launch/cell.yaml`` (:data:`DEFAULT_CONFIG_PATH`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from handover.runtime.plausibility import PlausibilityConfig, PlausibilityError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "launch" / "cell.yaml"

ARM_DOFS = 6
HAND_DOFS = 16
SIDE_DOFS = ARM_DOFS + HAND_DOFS


class ConfigError(ValueError):
    """A cell configuration value is missing or invalid; the message names file, key and value."""


def _length(n: int) -> dict:
    return {"length": n}


@dataclass(frozen=True)
class JointGroupConfig:
    """One joint group (an arm or a hand) in contract slot order. Angles in rad, speeds in rad/s.

    ``lower``/``upper``: the training position limits; ``velocity_limit``: the training speed limit
    per joint (> 0), enforced by the twin and by the command gate. The joints' physical (hardware)
    ranges are in ``plausibility.joint_ranges`` (:mod:`handover.runtime.plausibility`)."""

    joints: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    velocity_limit: tuple[float, ...]
    default: tuple[float, ...]


@dataclass(frozen=True)
class SideConfig:
    """One side of the cell (thrower or catcher): arm base pose and its two joint groups."""

    base_position: tuple[float, ...] = field(metadata=_length(3))  # world frame, m
    base_yaw: float  # rad about world z
    arm: JointGroupConfig = field(metadata={"group_length": ARM_DOFS})
    hand: JointGroupConfig = field(metadata={"group_length": HAND_DOFS})

    @property
    def joint_names(self) -> tuple[str, ...]:
        """The 22 joint names, arm then hand."""
        return self.arm.joints + self.hand.joints

    @property
    def lower(self) -> tuple[float, ...]:
        return self.arm.lower + self.hand.lower

    @property
    def upper(self) -> tuple[float, ...]:
        return self.arm.upper + self.hand.upper

    @property
    def velocity_limit(self) -> tuple[float, ...]:
        return self.arm.velocity_limit + self.hand.velocity_limit

    @property
    def default(self) -> tuple[float, ...]:
        return self.arm.default + self.hand.default


@dataclass(frozen=True)
class ObjectConfig:
    start_position: tuple[float, ...] = field(metadata=_length(3))  # world frame, m


@dataclass(frozen=True)
class GoalConfig:
    """The throw's goal, world frame (m): drawn per episode uniformly in ``center`` +- ``half_range``
    per axis, as the original draws it (object start + (U(-0.05, 0.05), -0.55 + U(-0.05, 0.05), +0.10)).
    A ``half_range`` of zero fixes the goal."""

    center: tuple[float, ...] = field(metadata=_length(3))
    half_range: tuple[float, ...] = field(metadata=_length(3))

    def draw(self, rng) -> tuple[float, float, float]:
        """One goal (m, world) from a ``numpy.random.Generator``."""
        return tuple(float(c + rng.uniform(-h, h)) if h > 0 else float(c) for c, h in zip(self.center, self.half_range))


@dataclass(frozen=True)
class ModelsConfig:
    """Model paths; relative paths are resolved against the config file's folder."""

    bundle: Optional[Path] = field(metadata={"must_exist": True, "bundle": True})


@dataclass(frozen=True)
class TopicsConfig:
    """ROS 2 topic and service names. ``{side}`` is thrower|catcher, ``{group}`` is arm|hand."""

    joint_states: str = field(metadata={"placeholders": ("{side}", "{group}")})
    joint_commands: str = field(metadata={"placeholders": ("{side}", "{group}")})
    object_position: str
    predicted_goal: str
    start: str
    estop: str
    estop_reset: str


@dataclass(frozen=True)
class TwinObjectConfig:
    """The nominal object of the twin; per-episode factors scale mass, friction and size."""

    shape: str = field(metadata={"choices": ("sphere", "cube", "cylinder")})
    size: float = field(metadata={"positive": True})  # m: sphere radius, cube half side, cylinder radius and half height
    mass: float = field(metadata={"positive": True})  # kg (seed paper's base object: 0.22867)
    friction: float = field(metadata={"positive": True})  # sliding friction coefficient


@dataclass(frozen=True)
class TrackerModelConfig:
    """How the twin's object tracker imitates the D435 pipeline."""

    rate_hz: float = field(metadata={"positive": True})  # frames per second (D435 depth: up to 90)
    latency_s: float  # capture-to-arrival delay, s (>= 0)
    noise_std: float  # Gaussian position noise per axis, m (>= 0)
    dropout: float  # probability that a frame has no detection (0..1)


@dataclass(frozen=True)
class CameraConfig:
    position: tuple[float, ...] = field(metadata=_length(3))  # world frame, m
    target: tuple[float, ...] = field(metadata=_length(3))  # point looked at, world frame, m
    fovy_deg: float = field(metadata={"positive": True})  # vertical field of view, degrees


@dataclass(frozen=True)
class TwinConfig:
    """The MuJoCo twin: drives (PD position actuators), physics step, object, tracker, cameras."""

    timestep_s: float = field(metadata={"positive": True})  # physics step; must divide the control period
    arm_stiffness: tuple[float, ...] = field(metadata=_length(6))  # N*m/rad (contract)
    arm_damping: tuple[float, ...] = field(metadata=_length(6))  # N*m*s/rad (URDF <dynamics damping>)
    arm_friction: tuple[float, ...] = field(metadata=_length(6))  # N*m, dry joint friction (URDF <dynamics friction>)
    arm_effort_limit: tuple[float, ...] = field(metadata=_length(6))  # N*m (robot-cell.md)
    hand_stiffness: float = field(metadata={"positive": True})  # N*m/rad (contract: 30)
    hand_damping: float = field(metadata={"positive": True})  # N*m*s/rad (contract: 1)
    hand_effort_limit: float = field(metadata={"positive": True})  # N*m (contract: 5)
    hand_armature: float = field(metadata={"positive": True})  # kg*m^2, reflected motor inertia per hand joint
    object: TwinObjectConfig
    tracker: TrackerModelConfig
    cameras: dict[str, CameraConfig]


@dataclass(frozen=True)
class GateConfig:
    """The command gate (:mod:`handover.runtime.command_gate`) in front of every joint group."""

    # A group that is following commands holds its measured position when no new command came for
    # this many control periods.
    stale_periods: float = field(metadata={"positive": True})


# Which backends may serve each kind of device (``devices:``). ``twin``: the MuJoCo twin's device (the
# twin node runs in the same process); ``mirror``: commands become states (drivers/mirror.py; a
# tracker mirror sees nothing), for bringing up part of a cell; the rest are the hardware drivers.
ARM_BACKENDS = ("twin", "mirror", "xarm")
HAND_BACKENDS = ("twin", "mirror", "allegro")
TRACKER_BACKENDS = ("twin", "mirror", "realsense")
DEVICE_BACKENDS = tuple(dict.fromkeys(ARM_BACKENDS + HAND_BACKENDS + TRACKER_BACKENDS))


@dataclass(frozen=True)
class DeviceConfig:
    """One device of the cell: ``backend`` (one of the kind's backends above) and its parameters,
    given under a key named like the backend (``xarm: {address: ...}``), kept here as a read-only
    mapping exactly as written. This module does not know the backends' parameters (the runtime does
    not import drivers): :func:`handover.drivers.registry.validate_devices` checks them with each
    backend's own config class, naming ``key`` (e.g. ``devices.thrower.arm``) and the file.
    ``params`` is empty when the backend's key is absent (twin; mirror with its defaults)."""

    backend: str
    params: typing.Mapping[str, Any]
    key: str  # where it came from, e.g. "devices.thrower.arm"


@dataclass(frozen=True)
class SideDevicesConfig:
    arm: DeviceConfig = field(metadata={"device": ARM_BACKENDS})
    hand: DeviceConfig = field(metadata={"device": HAND_BACKENDS})


@dataclass(frozen=True)
class DevicesConfig:
    """Which backend serves each device of the real cell, with its parameters (``devices:``).

    ``calibration_dir``: folder of the per-device calibration files, named per device serial and
    loaded when the device is configured: camera extrinsics ``d435_<serial>.yaml``, Allegro PD gains
    ``allegro_<serial>.yaml`` (relative paths: relative to the config file's folder; it need not
    exist until a device needs a file from it).

    Used by ``--backend real`` (each device from its entry) and ``--backend emulated`` (each hardware
    entry's driver against its emulator on the twin); ``--backend sim`` serves every device from the
    twin and only validates this section."""

    calibration_dir: Path
    thrower: SideDevicesConfig
    catcher: SideDevicesConfig
    tracker: DeviceConfig = field(metadata={"device": TRACKER_BACKENDS})

    def entries(self) -> dict[tuple[str, str], DeviceConfig]:
        """Every device: ``{(side, group): ...}`` for the four joint groups and ``("", "tracker")``."""
        out = {(side, group): getattr(getattr(self, side), group)
               for side in ("thrower", "catcher") for group in ("arm", "hand")}
        out[("", "tracker")] = self.tracker
        return out


@dataclass(frozen=True)
class CellConfig:
    """The whole cell. ``source`` is the file it was loaded from (not a YAML key)."""

    control_rate_hz: float  # policy rate, Hz (training: 20)
    # Rate at which each joint-group driver publishes its joint states, Hz (wall time, or sim time
    # under use_sim_time); at least the control rate. The xArm reports at 100 Hz (250 Hz on newer
    # firmware), the Allegro streams positions every 3 ms (333 Hz).
    joint_state_rate_hz: float = field(metadata={"positive": True})
    episode_steps: int  # control steps per episode (training: 30)
    # U(-1, 1) * history_noise (m) on the catcher's 12 object-history inputs per step, as the original
    # adds always, in evaluation too (0.05); 0 turns it off.
    history_noise: float
    thrower: SideConfig
    catcher: SideConfig
    object: ObjectConfig
    goal: GoalConfig
    models: ModelsConfig
    topics: TopicsConfig
    gate: GateConfig
    # Bounds of physically plausible inputs (workspace, joint margin, stamps): runtime/plausibility.py
    plausibility: PlausibilityConfig
    twin: TwinConfig
    # Which backend serves each device of the real cell, and its parameters (drivers/registry.py)
    devices: DevicesConfig
    source: Path = field(default=Path("<memory>"), metadata={"not_a_key": True})

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def joint_names(self) -> tuple[str, ...]:
        """All 44 joint names in contract order (thrower 0..21, catcher 22..43)."""
        return self.thrower.joint_names + self.catcher.joint_names

    @property
    def velocity_limit(self) -> tuple[float, ...]:
        """All 44 joint speed limits (rad/s), contract order."""
        return self.thrower.velocity_limit + self.catcher.velocity_limit


# ---------------------------------------------------------------------------------------------
# Loading


def load_cell_config(path: str | Path | None = None) -> CellConfig:
    """Load and validate a cell config file (default: ``launch/cell.yaml``)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path.is_dir():
        raise ConfigError(f"{path}: config is a folder, expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config as UTF-8 text: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return cell_config_from_dict(raw, source=path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (YAML keeps the last one
    without a word; which one the operator meant would be a guess)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def cell_config_from_dict(raw: Any, source: str | Path = "<memory>") -> CellConfig:
    """Validate a parsed YAML document into a :class:`CellConfig`."""
    source = Path(source)
    ctx = _Context(source)
    cfg = ctx.build(CellConfig, raw, "")
    cfg = dataclasses.replace(cfg, source=source)
    _check_cell(ctx, cfg)
    return cfg


class _Context:
    def __init__(self, source: Path):
        self.source = source
        self.base_dir = source.parent if source.name != "<memory>" else Path.cwd()

    def fail(self, key: str, problem: str, value: Any = dataclasses.MISSING) -> typing.NoReturn:
        where = key or "<top level>"
        got = "" if value is dataclasses.MISSING else f" (got {value!r})"
        raise ConfigError(f"{self.source}: {where}: {problem}{got}")

    def build(self, cls: type, raw: Any, key: str) -> Any:
        if not isinstance(raw, dict):
            self.fail(key, f"expected a mapping for {cls.__name__}", raw)
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("not_a_key")]
        known = {f.name for f in fields}
        for k in raw:
            if k not in known:
                self.fail(_join(key, str(k)), f"unknown key; expected one of {sorted(known)}")
        values = {}
        for f in fields:
            sub = _join(key, f.name)
            if f.name not in raw:
                self.fail(sub, "missing key")
            values[f.name] = self.value(hints[f.name], raw[f.name], sub, f.metadata)
        try:
            return cls(**values)
        except PlausibilityError as exc:  # a section that validates itself names the field
            self.fail(_join(key, exc.key), exc.problem, exc.value)

    def value(self, tp: Any, raw: Any, key: str, meta: typing.Mapping) -> Any:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if raw is None:
                return None
            return self.value(args[0], raw, key, meta)
        if origin is dict:
            key_tp, val_tp = typing.get_args(tp)
            if not isinstance(raw, dict) or not raw:
                self.fail(key, "expected a non-empty mapping", raw)
            items = {self.value(key_tp, k, key, {}): self.value(val_tp, v, _join(key, str(k)), {}) for k, v in raw.items()}
            return types.MappingProxyType(items)  # read-only, like the frozen dataclasses around it
        if "device" in meta:
            return self.device(raw, key, meta["device"])
        if dataclasses.is_dataclass(tp):
            obj = self.build(tp, raw, key)
            if "group_length" in meta:
                self.check_group(obj, key, meta["group_length"])
            return obj
        if origin is tuple:
            item_tp = typing.get_args(tp)[0]
            if not isinstance(raw, list):
                self.fail(key, "expected a list", raw)
            if "length" in meta and len(raw) != meta["length"]:
                self.fail(key, f"expected {meta['length']} entries, got {len(raw)}", raw)
            return tuple(self.value(item_tp, v, f"{key}[{i}]", {}) for i, v in enumerate(raw))
        if tp is float:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                self.fail(key, "expected a number", raw)
            if not math.isfinite(raw):
                self.fail(key, "expected a finite number", raw)
            if meta.get("positive") and not raw > 0:
                self.fail(key, "must be > 0", raw)
            return float(raw)
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.fail(key, "expected an integer", raw)
            return raw
        if tp is str:
            if not isinstance(raw, str) or not raw:
                self.fail(key, "expected a non-empty string", raw)
            if "choices" in meta and raw not in meta["choices"]:
                self.fail(key, f"expected one of {list(meta['choices'])}", raw)
            for ph in meta.get("placeholders", ()):
                if ph not in raw:
                    self.fail(key, f"must contain the placeholder {ph}", raw)
            return raw
        if tp is Path:
            if not isinstance(raw, str) or not raw:
                self.fail(key, "expected a path string", raw)
            p = Path(raw)
            p = p if p.is_absolute() else (self.base_dir / p).resolve()
            if meta.get("must_exist") and not p.exists():
                self.fail(key, f"path does not exist: {p}", raw)
            if meta.get("bundle") and not p.is_dir():
                self.fail(key, f"{p} is a file, expected a policy bundle folder", raw)
            if meta.get("bundle") and not (p / "manifest.json").is_file():
                self.fail(key, f"{p} has no manifest.json: not a policy bundle folder", raw)
            return p
        raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in this module

    def device(self, raw: Any, key: str, backends: tuple[str, ...]) -> DeviceConfig:
        """One ``devices:`` entry: ``backend`` and at most one parameter mapping, under the backend's name."""
        if not isinstance(raw, dict):
            self.fail(key, f"expected a mapping with 'backend' (one of {list(backends)}) and its parameters", raw)
        if "backend" not in raw:
            self.fail(f"{key}.backend", f"missing key; expected one of {list(backends)}")
        backend = raw["backend"]
        if not isinstance(backend, str) or backend not in backends:
            self.fail(f"{key}.backend", f"expected one of {list(backends)}", backend)
        for k in raw:
            if k in ("backend", backend):
                continue
            if k in DEVICE_BACKENDS:
                self.fail(_join(key, str(k)), f"parameters for backend {k}, but {key}.backend is {backend}: "
                          f"give the parameters of {backend} under {key}.{backend}")
            self.fail(_join(key, str(k)), f"unknown key; expected 'backend' and optionally '{backend}' "
                      "(its parameters)")
        params = raw.get(backend)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self.fail(f"{key}.{backend}", f"expected a mapping of the {backend} backend's parameters", params)
        return DeviceConfig(backend=backend, params=_frozen_tree(params), key=key)

    def check_group(self, g: JointGroupConfig, key: str, n: int) -> None:
        for name in ("joints", "lower", "upper", "velocity_limit", "default"):
            seq = getattr(g, name)
            if len(seq) != n:
                self.fail(f"{key}.{name}", f"expected {n} entries, got {len(seq)}", list(seq))
        for i, (lo, hi) in enumerate(zip(g.lower, g.upper)):
            if not lo < hi:
                self.fail(
                    f"{key}.lower[{i}]",
                    f"lower limit must be below upper limit {key}.upper[{i}] = {hi!r}",
                    lo,
                )
        for i, v in enumerate(g.velocity_limit):
            if not v > 0:
                self.fail(f"{key}.velocity_limit[{i}]", "must be > 0 rad/s", v)


_TOPIC_RE = re.compile(r"^/[A-Za-z0-9_/{}]+$")


def _check_cell(ctx: _Context, cfg: CellConfig) -> None:
    if not cfg.control_rate_hz > 0:
        ctx.fail("control_rate_hz", "must be > 0", cfg.control_rate_hz)
    if cfg.joint_state_rate_hz < cfg.control_rate_hz:
        ctx.fail("joint_state_rate_hz", f"must be at least the control rate {cfg.control_rate_hz:g} Hz",
                 cfg.joint_state_rate_hz)
    if cfg.episode_steps <= 0:
        ctx.fail("episode_steps", "must be > 0", cfg.episode_steps)
    if not cfg.history_noise >= 0:
        ctx.fail("history_noise", "must be >= 0 m", cfg.history_noise)
    seen: dict[str, str] = {}
    for side in ("thrower", "catcher"):
        for group in ("arm", "hand"):
            for i, name in enumerate(getattr(getattr(cfg, side), group).joints):
                key = f"{side}.{group}.joints[{i}]"
                if name in seen:
                    ctx.fail(key, f"duplicate joint name, also at {seen[name]}", name)
                seen[name] = key
    _check_twin(ctx, cfg)
    _check_plausibility(ctx, cfg)
    for f in dataclasses.fields(TopicsConfig):
        name = getattr(cfg.topics, f.name)
        if not _TOPIC_RE.match(name) or "//" in name or name.endswith("/"):
            ctx.fail(f"topics.{f.name}", "not a valid absolute ROS 2 name", name)


def _check_twin(ctx: _Context, cfg: CellConfig) -> None:
    tw = cfg.twin
    ratio = cfg.control_period_s / tw.timestep_s
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        ctx.fail("twin.timestep_s", f"must divide the control period {cfg.control_period_s:.6g} s into whole steps", tw.timestep_s)
    for name in ("arm_stiffness", "arm_damping", "arm_effort_limit"):
        for i, v in enumerate(getattr(tw, name)):
            if not v > 0:
                ctx.fail(f"twin.{name}[{i}]", "must be > 0", v)
    for i, v in enumerate(cfg.goal.half_range):
        if not v >= 0:
            ctx.fail(f"goal.half_range[{i}]", "must be >= 0 m", v)
    for i, v in enumerate(tw.arm_friction):
        if not v >= 0:
            ctx.fail(f"twin.arm_friction[{i}]", "must be >= 0", v)
    tr = tw.tracker
    if tr.latency_s < 0:
        ctx.fail("twin.tracker.latency_s", "must be >= 0", tr.latency_s)
    if tr.noise_std < 0:
        ctx.fail("twin.tracker.noise_std", "must be >= 0", tr.noise_std)
    if not 0 <= tr.dropout < 1:
        ctx.fail("twin.tracker.dropout", "must be in [0, 1)", tr.dropout)
    for cam in ("d435", "overview"):
        if cam not in tw.cameras:
            ctx.fail(f"twin.cameras.{cam}", "missing key")
    for name, cam in tw.cameras.items():
        if cam.position == cam.target:
            ctx.fail(f"twin.cameras.{name}.target", "must differ from the camera position", list(cam.target))


def _check_plausibility(ctx: _Context, cfg: CellConfig) -> None:
    """Each joint group's hardware range has one entry per joint and contains its training range;
    everything the cell itself places lies inside the plausible workspace: the arm bases, the
    object's start and the whole goal box (else the bounds, not the inputs, are wrong)."""
    pl = cfg.plausibility
    for side in ("thrower", "catcher"):
        for group in ("arm", "hand"):
            g = getattr(getattr(cfg, side), group)
            lower, upper = pl.hardware_range(side, group)
            key = f"plausibility.joint_ranges.{side}.{group}"
            for name, seq in (("hardware_lower", lower), ("hardware_upper", upper)):
                if len(seq) != len(g.joints):
                    ctx.fail(f"{key}.{name}", f"expected {len(g.joints)} entries (the joints of {side}.{group}), "
                             f"got {len(seq)}", list(seq))
            for i, (joint, lo, hi, hw_lo, hw_hi) in enumerate(zip(g.joints, g.lower, g.upper, lower, upper)):
                if hw_lo > lo:
                    ctx.fail(f"{key}.hardware_lower[{i}]", f"the hardware range of {joint} must contain its training "
                             f"range: above {side}.{group}.lower[{i}] = {lo!r}", hw_lo)
                if hw_hi < hi:
                    ctx.fail(f"{key}.hardware_upper[{i}]", f"the hardware range of {joint} must contain its training "
                             f"range: below {side}.{group}.upper[{i}] = {hi!r}", hw_hi)
    g = cfg.goal
    corners = [tuple(c + s * h for c, h, s in zip(g.center, g.half_range, signs))
               for signs in ((-1, -1, -1), (1, 1, 1))]
    places = [("thrower.base_position", cfg.thrower.base_position), ("catcher.base_position", cfg.catcher.base_position),
              ("object.start_position", cfg.object.start_position), ("goal.center - goal.half_range", corners[0]),
              ("goal.center + goal.half_range", corners[1])]
    for where, xyz in places:
        if not pl.contains(xyz):
            ctx.fail("plausibility.workspace_lower/workspace_upper",
                     f"the workspace box must contain {where} = {[round(v, 6) for v in xyz]} m",
                     [list(pl.workspace_lower), list(pl.workspace_upper)])


def _frozen_tree(value: Any) -> Any:
    """A read-only copy of parsed YAML: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _frozen_tree(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen_tree(v) for v in value)
    return value


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub
