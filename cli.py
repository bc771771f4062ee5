"""The ``handover`` command. Each subcommand lives next to the code it runs; this file only lists them.

A module that provides a subcommand defines ``add_parser(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed arguments, returns the exit code).
Errors that an operator can fix (bad config, bad input file, bad bundle) are printed as one line
naming the bad value and exit with code 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules with subcommands, in the order ``handover --help`` lists them.
COMMAND_MODULES = (
    "handover.runtime.replay",  # handover contract replay
    "handover.runtime.export",  # handover export
    "handover.runtime.benchmark",  # handover benchmark
    "handover.runtime.config_check",  # handover config
    "handover.sim_twin.commands",  # handover twin export-mjcf | render | benchmark
    "handover.sim_twin.train_reference",  # handover train-reference
    "handover.sim_twin.evaluate",  # handover eval
    "handover.runtime.bringup",  # handover bringup
    "handover.runtime.node_process",  # handover node SET (one process of the launch file)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handover",
        description="Run learned Dynamic Handover policies on the cell or its MuJoCo twin.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from handover.runtime.errors import OPERATOR_ERRORS

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OPERATOR_ERRORS as exc:
        print(f"handover {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
