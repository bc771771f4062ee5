"""``ros2 launch handover bringup.launch.py [backend:=sim|emulated|real] [config:=PATH] [episodes:=N] [speed:=X] [record:=BAG]``

Brings up the whole cell: three processes of the node graph (``handover node SET``, see
``handover/runtime/node_graph.py``):

- ``cell`` (sim, emulated) or ``drivers`` (real): the twin node with the four joint-group drivers and
  the object tracker, which serve the twin's devices (sim) or, as the real drivers, the emulators of
  the config's ``devices:`` running on the twin in that process (emulated); or the drivers with
  their own hardware (real, from the config's ``devices:``);
- ``safety``: the safety node;
- ``policy``: the policy node with the config's bundle.

With ``episodes:=N`` (N > 0) a fourth process, the operator (``handover node operator``), starts N
episodes one after the other and prints each outcome; with ``episodes:=0`` (default) start them
yourself: ``ros2 service call /handover/start std_srvs/srv/Trigger``. ``speed:=X`` runs the twin X times
faster than real time, publishes ``/clock`` and sets ``use_sim_time`` on every node. ``record:=BAG``
adds a process that records the cell's topics into the rosbag2 folder BAG (``handover record``; it
must not exist yet); the bag is closed when the launch ends.

Every node keeps its own name (``twin``, ``thrower_arm_driver``, ..., ``safety``, ``policy``): the
processes get no node-name remap, as each runs several nodes.

How the launch ends (``ros2 launch`` returns what ``LaunchService.run()`` returns: 0, or 1 when the
launch failed):

- the operator (``episodes:=N``) finished: the whole launch stops; exit status 0 if the operator
  exited 0, else 1 with ``the operator process exited with code C`` logged;
- any other process ended on its own: the whole launch stops (the cell does not work with a process
  missing); exit status 1 with ``the P process exited with code C`` logged if its code was not 0
  (e.g. ``backend:=real`` without hardware: the drivers process prints the error and exits 2);
- Ctrl-C: every process stops; exit status 0.
"""

from launch import LaunchDescription
import os

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

BACKENDS = ("sim", "emulated", "real")  # as handover.runtime.node_graph.BACKENDS


class ProcessFailed(RuntimeError):
    """A process of the cell exited non-zero. Raised in the launch's event loop, which logs it, shuts
    the launch down and makes ``LaunchService.run()`` (so ``ros2 launch``) return 1."""


def _on_exit(node_set: str, episodes: int):
    def on_exit(event, context):
        if context.is_shutdown:  # stopped by the launch (Ctrl-C, or another process ended it)
            return None
        if event.returncode != 0:
            raise ProcessFailed(f"the {node_set} process exited with code {event.returncode} "
                                "(its error is in its output above); stopping the launch")
        if node_set == "operator":
            return [Shutdown(reason=f"the operator ran its {episodes} episode(s)")]
        return [Shutdown(reason=f"the {node_set} process ended; the cell does not run without it")]

    return on_exit


def _processes(context):
    backend = LaunchConfiguration("backend").perform(context)
    config = LaunchConfiguration("config").perform(context)
    speed = LaunchConfiguration("speed").perform(context)
    episodes_text = LaunchConfiguration("episodes").perform(context) or "0"
    if backend not in BACKENDS:
        raise ValueError(f"backend:={backend!r}: expected one of {', '.join(BACKENDS)}")
    try:
        episodes = int(episodes_text)
    except ValueError:
        raise ValueError(f"episodes:={episodes_text!r}: expected a whole number >= 0") from None
    if episodes < 0:
        raise ValueError(f"episodes:={episodes}: expected a whole number >= 0")
    common = ["--backend", backend]
    if config:
        common += ["--config", config]
    if speed:
        common += ["--speed", speed]
    # one parameter for every node of every process (launch_ros writes it for the wildcard '/**')
    params = [{"use_sim_time": bool(speed) and backend == "sim"}]
    sets = ["drivers" if backend == "real" else "cell", "safety", "policy"] + (["operator"] if episodes > 0 else [])
    actions = []
    for node_set in sets:
        # No name=: launch_ros would pass `-r __node:=NAME`, which renames every node of the process.
        # exec_name only labels the process in the launch's output ([cell-1], [safety-2], ...).
        process = Node(package="handover", executable="handover_node", exec_name=node_set,
                       arguments=[node_set, *common, "--episodes", str(episodes)], parameters=params,
                       output="screen")
        actions += [RegisterEventHandler(OnProcessExit(target_action=process, on_exit=_on_exit(node_set, episodes))),
                    process]
    bag = LaunchConfiguration("record").perform(context)
    if bag:
        from ament_index_python.packages import get_package_prefix

        # `handover record` of the same installation as handover_node (bin/ of the package's prefix)
        handover = os.path.join(get_package_prefix("handover"), "bin", "handover")
        cmd = [handover, "record", bag] + (["--config", config] if config else []) + (["--use-sim-time"] if speed else [])
        recorder = ExecuteProcess(cmd=cmd, name="record", output="screen", sigterm_timeout="10")
        actions += [RegisterEventHandler(OnProcessExit(target_action=recorder, on_exit=_on_exit("record", episodes))),
                    recorder]
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("backend", default_value="sim", choices=list(BACKENDS),
                              description="sim: the MuJoCo twin (default); emulated: the real drivers against "
                                          "emulated devices on the twin; real: the hardware"),
        DeclareLaunchArgument("config", default_value="", description="cell config (default: launch/cell.yaml)"),
        DeclareLaunchArgument("episodes", default_value="0",
                              description="episodes the operator process runs, then the launch ends with its "
                                          "exit status; 0: start them with /handover/start"),
        DeclareLaunchArgument("speed", default_value="",
                              description="twin speed factor; empty: paced to real time"),
        DeclareLaunchArgument("record", default_value="",
                              description="record the cell's topics into this rosbag2 folder (MCAP); empty: no recording"),
        OpaqueFunction(function=_processes),
    ])
