"""``handover node SET``: one process of the cell's node graph (what ``launch/bringup.launch.py`` starts).

Node sets: see :mod:`handover.runtime.node_graph`. ``operator`` starts ``--episodes`` episodes and exits.

ROS arguments (``--ros-args ...``, appended by launch_ros) go to this process's rclpy context, and so
to every node in it, except a node-name remap (``-r __node:=NAME``): one process runs several nodes
(the twin, four drivers and the tracker share the ``cell`` process), and a process-wide ``__node``
remap would give all of them the same name, so ``/diagnostics`` and ``ros2 node list`` could no longer
tell them apart. It is dropped with a warning; every node keeps its own name.

Exit codes: 0 when a node set is stopped with SIGINT (how ``ros2 launch`` stops its processes) or
when the operator's episodes all ran to their end (caught or not); 1 when one ended otherwise (a
stop, a fault, a lost cell); 130 when the operator is interrupted before; 2 for an
operator's error (e.g. ``--backend real`` without hardware, or no outcome from the cell), printed as
one line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from handover.runtime.cell_config import load_cell_config
from handover.runtime.cli_values import nonneg_int
from handover.runtime.errors import InputError
from handover.runtime.node_graph import NODE_SETS, add_common_arguments, build_graph

NODE_NAME_REMAPS = ("__node", "__name")  # rcl's node-name remap; __name is its older spelling


def add_parser(sub) -> None:
    p = sub.add_parser("node", help="run one set of the cell's ROS 2 nodes (what the launch file starts)",
                       description="Run one process of the cell's node graph until interrupted: " + ", ".join(NODE_SETS))
    p.add_argument("set", choices=NODE_SETS)
    add_common_arguments(p)
    p.add_argument("--episodes", type=nonneg_int, default=0, metavar="N", help="operator: episodes to run")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=None,
                   help=argparse.SUPPRESS)  # appended by launch_ros: parameters files, remaps, log levels
    p.set_defaults(func=run_node)


def split_ros_args(ros_args: list[str] | None) -> tuple[list[str], list[str]]:
    """``(kept, dropped)``: the ROS arguments for this process's context, without node-name remaps
    (``-r __node:=X`` / ``--remap __node:=X``), and the dropped remaps. Remaps aimed at one node
    (``twin:__node:=X``), namespaces, parameters and log levels are kept."""
    kept: list[str] = []
    dropped: list[str] = []
    args = list(ros_args or [])
    i = 0
    while i < len(args):
        if args[i] in ("-r", "--remap") and i + 1 < len(args) and args[i + 1].split(":=", 1)[0] in NODE_NAME_REMAPS:
            dropped.append(args[i + 1])
            i += 2
            continue
        kept.append(args[i])
        i += 1
    return kept, dropped


def _interrupt_once(signum, frame):
    """The first SIGINT stops the process (``KeyboardInterrupt`` in the main thread); later ones are
    ignored so that they cannot cut the cleanup short: a Ctrl-C in a terminal reaches every process
    of ``ros2 launch`` and then launch sends its own SIGINT. SIGTERM still ends the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_node(args) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    cfg = load_cell_config(args.config)
    if args.speed is not None and not args.speed > 0:
        raise InputError(f"--speed {args.speed}: must be > 0")
    if args.episodes < 0:
        raise InputError(f"--episodes {args.episodes}: must be >= 0")
    ros_args, dropped = split_ros_args(args.ros_args)
    for remap in dropped:
        print(f"handover node {args.set}: ignoring the process-wide remap {remap}: this process runs several "
              "nodes and each keeps its own name", file=sys.stderr, flush=True)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupt_once) if main_thread else None
    context = rclpy.Context()
    # rclpy.init reads sys.argv unless given args: give it this process's ROS arguments only. Signals
    # are handled here (above), not by rclpy, so the nodes are shut down in order.
    rclpy.init(args=["handover_node", *(["--ros-args", *ros_args] if ros_args else [])], context=context,
               signal_handler_options=SignalHandlerOptions.NO)
    graph = None
    try:
        graph = build_graph(cfg, context, args.backend, args.set, real_time=args.speed is None,
                            speed=args.speed or 1.0, bundle=args.bundle)
        graph.start()
        if args.set == "operator":
            from handover.runtime.bringup import Operator, exit_status, run_episodes

            op = Operator(graph)
            run_episodes(op, args.episodes, timeout=20.0)
            return exit_status(op, args.episodes)
        threading.Event().wait()
    except KeyboardInterrupt:
        if args.set == "operator":
            print(f"handover node operator: interrupted (SIGINT) before its {args.episodes} episode(s) were done",
                  file=sys.stderr, flush=True)
            return 130  # the shell's code for SIGINT
        return 0  # a node set runs until interrupted: SIGINT is its normal end
    finally:
        interrupted = main_thread and signal.getsignal(signal.SIGINT) is not _interrupt_once
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup below runs to its end
        try:
            if graph is not None:
                graph.shutdown()
            context.try_shutdown()
        finally:
            # After a SIGINT, SIGINT stays ignored until the process has exited (a second one during the
            # interpreter's own teardown would kill it with the signal instead of exit code 0).
            if main_thread and not interrupted and previous is not None:
                signal.signal(signal.SIGINT, previous)
    return 0
