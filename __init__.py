"""handover: run learned Dynamic Handover throw-and-catch policies on a two-arm cell or its twin.

Subpackages (one folder each in the source tree):

- ``handover.drivers``: device interfaces and the hardware drivers (arms, hands, camera).
- ``handover.sim_twin``: the MuJoCo twin of the cell, behind the same device interfaces.
- ``handover.runtime``: the policy contract, ONNX bundles and the step that turns states into commands.
- ``handover.calibration``: camera extrinsics and PD gain calibration.
- ``handover.launch``: launch files and the default cell configuration.
"""

__version__ = "0.1.0"
