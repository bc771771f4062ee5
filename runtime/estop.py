"""The safety stop's rules (pure) and the one way a node listens to it.

Rules: any ``true`` on ``/handover/estop`` latches the stop. The latch is released only by
``/handover/estop/reset`` while the last estop message is ``false``; a reset while it is ``true`` is
refused with the reason. The safety node owns the latch (:class:`EstopLatch`) and publishes it on
``/handover/safety/latched`` (transient local). Every other node reacts to ``/handover/estop``
itself (no extra hop: the stop acts within one control period even if the safety node is slow) and
releases only when the safety node publishes ``false`` after an accepted reset and its own last
estop message is ``false`` (:func:`listen_for_stop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class EstopLatch:
    latched: bool = False
    last_estop: bool = False
    stops: int = 0  # how many times the stop latched

    def on_estop(self, value: bool) -> bool:
        """An estop message; returns True if this message latched the stop (it was released before)."""
        self.last_estop = bool(value)
        if value and not self.latched:
            self.latched = True
            self.stops += 1
            return True
        return False

    def request_reset(self) -> tuple[bool, str]:
        """``(accepted, message)`` for a reset request."""
        if self.last_estop:
            return False, "refused: the last message on the estop topic is still true; publish false first"
        if not self.latched:
            return True, "not latched: nothing to reset"
        self.latched = False
        return True, "released: the safety stop is reset"


def listen_for_stop(node, topics, on_stop: Callable[[], None], on_release: Callable[[], None], callback_group=None) -> list:
    """Subscribe ``node`` to the estop (``true`` -> ``on_stop()``) and to the safety node's latch
    (``true`` -> ``on_stop()``, ``false`` -> ``on_release()``); each callback fires once per transition. Both topics are reliable and transient local. Returns the
    subscriptions (keep them referenced)."""
    from std_msgs.msg import Bool

    from handover.runtime.ros_interface import qos_latched

    last = {"estop": False, "stopped": False}

    def stop() -> None:
        if not last["stopped"]:  # callbacks fire once per transition
            last["stopped"] = True
            on_stop()

    def estop(msg: Bool) -> None:
        last["estop"] = bool(msg.data)
        if msg.data:
            stop()

    def latched(msg: Bool) -> None:
        # A node that starts while the stop is latched is stopped by the latch itself. A release is
        # only believed while this node's last estop message is false too: a stale "released" from
        # before the newest stop must not undo it.
        if msg.data:
            stop()
        elif not last["estop"] and last["stopped"]:
            last["stopped"] = False
            on_release()

    return [
        node.create_subscription(Bool, topics.estop, estop, qos_latched(depth=10), callback_group=callback_group),
        node.create_subscription(Bool, topics.safety_latched, latched, qos_latched(depth=10), callback_group=callback_group),
    ]
