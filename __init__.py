"""handover: run learned Dynamic Handover throw-and-catch policies on a two-arm cell or its twin.

Subpackages (one folder each in the source tree):

- ``handover.drivers``: device interfaces and the hardware drivers (arms, hands, camera).
- ``handover.sim_twin``: the MuJoCo twin of the cell, behind the same device interfaces.
- ``handover.runtime``: the policy contract, ONNX bundles and the step that turns states into commands.
- ``handover.calibration``: camera extrinsics and PD gain calibration.
- ``launch/`` (data, not a Python package: it must not shadow ROS's ``launch``): launch files, the
  default cell configuration and the reference bundle, installed as package data.
"""

__version__ = "0.1.0"
