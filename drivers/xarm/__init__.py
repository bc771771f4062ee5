"""The xArm6 arms: a joint-group driver on the vendor's ``xarm-python-sdk`` and an emulated
controller that the unmodified SDK talks to over its real TCP protocol.

- :mod:`.config`: :class:`XArmConfig`, typed and validated (address, stream rate, timeouts, ...).
- :mod:`.driver`: :class:`XArmJointGroup`, the :class:`~handover.drivers.joint_group.JointGroup`
  backend (servo targets streamed from its own thread; recovery in its docstring).
- :mod:`.codes`: the vendor's words for controller error/warning codes and SDK return codes.
- :mod:`.emulator`: :class:`XArmEmulator`, the controller's end of the protocol, on a joint backend
  (:mod:`.joint_backends`: the twin, or a rate-limited model), with fault injection.
- :mod:`.benchmark`: achieved servo stream rate and the driver thread's CPU share.

Importing this package does not import the SDK (the driver imports it at ``configure``).
"""

from handover.drivers.xarm.config import XArmConfig
from handover.drivers.xarm.driver import XArmError, XArmJointGroup

__all__ = ["XArmConfig", "XArmError", "XArmJointGroup"]
