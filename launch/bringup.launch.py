"""``ros2 launch handover bringup.launch.py [backend:=sim|real] [config:=PATH] [episodes:=N] [speed:=X]``

Brings up the whole cell: three processes of the node graph (``handover node SET``, see
``handover/runtime/node_graph.py``):

- ``cell`` (sim) or ``drivers`` (real): the twin node with the four joint-group drivers and the
  object tracker, which serve the twin's devices; or the drivers with their own hardware;
- ``safety``: the safety node;
- ``policy``: the policy node with the config's bundle.

With ``episodes:=N`` (N > 0) a fourth process, the operator (``handover node operator``), starts N
episodes one after the other and prints each outcome; with ``episodes:=0`` (default) start them
yourself: ``ros2 service call /handover/start std_srvs/srv/Trigger``. ``speed:=X`` runs the twin X times
faster than real time, publishes ``/clock`` and sets ``use_sim_time`` on every node.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

BACKENDS = ("sim", "real")


def _processes(context):
    backend = LaunchConfiguration("backend").perform(context)
    config = LaunchConfiguration("config").perform(context)
    speed = LaunchConfiguration("speed").perform(context)
    if backend not in BACKENDS:
        raise ValueError(f"backend:={backend!r}: expected one of {', '.join(BACKENDS)}")
    common = ["--backend", backend]
    if config:
        common += ["--config", config]
    if speed:
        common += ["--speed", speed]
    params = [{"use_sim_time": bool(speed)}]
    episodes = int(LaunchConfiguration("episodes").perform(context) or 0)
    sets = ["cell" if backend == "sim" else "drivers", "safety", "policy"] + (["operator"] if episodes > 0 else [])
    return [
        Node(package="handover", executable="handover_node", name=f"handover_{name}",
             arguments=[name, *common, "--episodes", str(episodes)], parameters=params, output="screen")
        for name in sets
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("backend", default_value="sim", choices=list(BACKENDS),
                              description="sim: the MuJoCo twin (default); real: the hardware"),
        DeclareLaunchArgument("config", default_value="", description="cell config (default: launch/cell.yaml)"),
        DeclareLaunchArgument("episodes", default_value="0",
                              description="episodes the operator process runs; 0: start them with /handover/start"),
        DeclareLaunchArgument("speed", default_value="",
                              description="twin speed factor; empty: paced to real time"),
        OpaqueFunction(function=_processes),
    ])
