"""``handover node SET``: one process of the cell's node graph (what ``launch/bringup.launch.py`` starts).

Node sets: see :mod:`handover.runtime.node_graph`. ``operator`` starts ``--episodes`` episodes and exits.
"""

from __future__ import annotations

import argparse
import threading

from handover.runtime.cell_config import load_cell_config
from handover.runtime.errors import InputError
from handover.runtime.node_graph import NODE_SETS, add_common_arguments, build_graph


def add_parser(sub) -> None:
    p = sub.add_parser("node", help="run one set of the cell's ROS 2 nodes (what the launch file starts)",
                       description="Run one process of the cell's node graph until interrupted: " + ", ".join(NODE_SETS))
    p.add_argument("set", choices=NODE_SETS)
    add_common_arguments(p)
    p.add_argument("--episodes", type=int, default=0, metavar="N", help="operator: episodes to run")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help=argparse.SUPPRESS)  # appended by launch_ros; remappings are not used
    p.set_defaults(func=run_node)


def run_node(args) -> int:
    import rclpy

    cfg = load_cell_config(args.config)
    if args.speed is not None and not args.speed > 0:
        raise InputError(f"--speed {args.speed}: must be > 0")
    context = rclpy.Context()
    rclpy.init(context=context)
    graph = build_graph(cfg, context, args.backend, args.set, real_time=args.speed is None,
                        speed=args.speed or 1.0, bundle=args.bundle)
    graph.start()
    try:
        if args.set == "operator":
            from handover.runtime.bringup import Operator, run_episodes

            run_episodes(Operator(graph), args.episodes, timeout=20.0)
            return 0
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        graph.shutdown()
        context.try_shutdown()
    return 0
