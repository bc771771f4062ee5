"""Shutting the graph down (end of ``handover bringup``, Ctrl-C, SIGTERM): every driver holds its
measured position as the last command its device gets, then every device is closed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")


def test_shutdown_holds_every_joint_group_then_closes_every_device(ros_context):
    from handover.drivers.device import Lifecycle
    from handover.runtime.cell_config import load_cell_config
    from handover.runtime.node_graph import build_graph

    cell_config = load_cell_config()

    graph = build_graph(cell_config, ros_context, "sim", "all")
    graph.start()
    twin = graph.twin.twin
    devices = graph.devices.all()
    assert all(d.state is Lifecycle.ACTIVE for d in devices)
    # move the PD targets away from where the joints are, as a command in flight would have
    index = np.arange(44)
    with graph.twin.lock:
        twin.set_targets(index, twin.joint_positions() + 0.3)
        twin.step(1)
    graph.shutdown()
    measured = twin.joint_positions()
    targets = twin.data.ctrl[twin.actuator_ids]
    # the last command of every group was its measured position at the hold (within one physics step's motion)
    assert np.max(np.abs(targets - measured)) < 0.05, np.max(np.abs(targets - measured))
    assert all(d.state is Lifecycle.UNCONFIGURED for d in devices)  # closed
    assert all("shutting down" in d.detail for d in graph.drivers)
