"""The ``handover`` command. Each subcommand lives next to the code it runs; this file only lists them.

A module that provides a subcommand defines ``add_parser(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed arguments, returns the exit code).
Errors that an operator can fix (bad config, bad input file, bad bundle) are printed as one line
naming the bad value and exit with code 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

# Modules with subcommands, in the order ``handover --help`` lists them.
COMMAND_MODULES = (
    "handover.runtime.replay",  # handover contract replay
    "handover.runtime.recorder",  # handover record
    "handover.sim_twin.replay_bag",  # handover replay
    "handover.calibration.commands",  # handover calibrate extrinsics
    "handover.sim_twin.gain_search",  # handover calibrate gains
    "handover.runtime.export",  # handover export
    "handover.runtime.benchmark",  # handover benchmark
    "handover.runtime.graph_benchmark",  # handover graph-benchmark
    "handover.drivers.benchmark",  # handover drivers-benchmark
    "handover.runtime.config_check",  # handover config
    "handover.sim_twin.commands",  # handover twin export-mjcf | render | benchmark
    "handover.sim_twin.train_reference",  # handover train-reference
    "handover.sim_twin.evaluate",  # handover eval
    "handover.runtime.bringup",  # handover bringup
    "handover.runtime.node_process",  # handover node SET (one process of the launch file)
)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (``handover CMD: error: ...``; usage with ``-h``), exit 2.
    Sub-commands' parsers are of this class too (argparse makes them of their parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like ``KeyboardInterrupt`` for SIGINT, so that every
    command's ``finally`` blocks run (devices hold and close, files are completed or left untouched)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def check_devices(cfg) -> list[str]:
    """The hook ``handover config`` calls (``args.check_devices``) after loading a config: each
    ``devices:`` entry checked with its driver's own config class (handover.drivers.registry; the
    runtime itself may not import drivers). Returns one line per device; raises ConfigError."""
    from handover.drivers.registry import describe, validate_devices

    return describe(validate_devices(cfg))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="handover",
        description="Run learned Dynamic Handover policies on the cell or its MuJoCo twin.",
    )
    parser.set_defaults(check_devices=check_devices)  # hooks for commands of the runtime layer
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def operator_errors() -> tuple[type[BaseException], ...]:
    """The errors an operator can fix: printed as one line, exit code 2."""
    from handover.runtime.bundle import BundleError
    from handover.runtime.cell_config import ConfigError
    from handover.runtime.errors import InputError

    return (ConfigError, BundleError, InputError, FileNotFoundError)


def _so_far() -> str:
    from handover.runtime.run_status import done

    return f": {done()}" if done() else ""


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: its own (0 on success), 2 for an operator's error (one line on
    stderr), 130 after Ctrl-C (SIGINT) and 143 after SIGTERM (one line, no traceback: the command's
    own cleanup has run by then; also while the command is still starting up)."""
    name = "handover"
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # -h, or a bad argument (one line already printed)
            return int(exc.code or 0)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        name = f"handover {args.command}"
        return int(args.func(args) or 0)
    except operator_errors() as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`handover config | head`): no traceback, no more output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's code for SIGPIPE
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted (SIGINT); stopped cleanly{_so_far()}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"\n{name}: terminated (SIGTERM); stopped cleanly{_so_far()}", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
