"""``handover config [PATH]``: load and validate a cell config, print a summary.

The ``devices:`` section's per-backend parameters are checked by each driver's own config class. The
runtime does not import drivers, so that check is a hook the CLI passes in (``args.check_devices``,
:func:`handover.cli.check_devices`); without it (this function called on its own) the section is
checked as far as cell_config does: backends and the shape of each entry."""

from __future__ import annotations

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="validate a cell config file and print a summary")
    p.add_argument("path", nargs="?", default=str(DEFAULT_CONFIG_PATH), help="cell YAML (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = load_cell_config(args.path)
    check = getattr(args, "check_devices", None)
    devices = check(cfg) if check is not None else [
        f"{entry.key}: {entry.backend} (parameters not checked: no driver hook)" for entry in cfg.devices.entries().values()]
    print(f"{cfg.source}: ok")
    print(f"  control rate {cfg.control_rate_hz:g} Hz, {cfg.episode_steps} steps per episode")
    for side in ("thrower", "catcher"):
        s = getattr(cfg, side)
        print(f"  {side}: base {list(s.base_position)} m, yaw {s.base_yaw:g} rad, {len(s.joint_names)} joints")
    print(f"  goal {list(cfg.goal.center)} +- {list(cfg.goal.half_range)} m per episode, bundle {cfg.models.bundle}")
    for line in devices:
        print(f"  {line}")
    return 0
