"""The safety stop's rules (pure) and the one way a node listens to it.

Rules:

- Any ``true`` on ``/handover/estop`` latches the stop. The latch is released only by the service
  ``/handover/estop/reset`` while the last estop message is ``false``; a reset while it is ``true``
  is refused with the reason. The safety node owns the latch (:class:`EstopLatch`) and publishes it
  on ``/handover/safety/latched`` (reliable, transient local).
- The latch starts LATCHED (:class:`EstopLatch` default): a safety node that starts or restarts
  never releases a stop by itself. At the cell's first bring-up the operator releases it (estop
  ``false``, then the reset service); ``handover bringup`` does so and says it did.
- Every other node reacts to ``/handover/estop`` itself (no extra hop: the stop acts within one
  control period even if the safety node is slow) and to ``true`` on the latch topic from anyone:
  stopping is always allowed (:class:`StopRules`).
- A node releases only on a ``false`` on the latch topic that the safety node sent, while its own
  last estop message is ``false`` too. "Sent by the safety node": rclpy 7.1 (Jazzy) does not hand a
  subscription the sender's GID (its ``MessageInfo`` has timestamps and sequence numbers only,
  checked in rclpy 7.1.6), so the rule is on the graph: when the ``false`` is handled, every
  publisher of the latch topic must be the safety node (node name :data:`SAFETY_NODE_NAME` in the
  listener's namespace) (:func:`release_check`). Any other publisher on the topic makes the
  release count as refused (counted, reported in the node's diagnostics); the node stays stopped
  until the safety node publishes ``false`` again with no other publisher on the topic (the safety
  node republishes its state on every accepted reset). A publisher whose node the graph cannot name
  yet (its participant's node list not yet discovered) makes the release *pending*: re-checked
  every :data:`RELEASE_RECHECK_S` for up to :data:`RELEASE_PENDING_S` while nothing newer came.

What this does not guarantee: ROS 2 node names are not authenticated. A node that calls itself
``safety`` can release every stop, and a publisher that sends ``false`` and disappears before the
listener handled it is not seen on the graph any more. Only DDS-Security access control (SROS2:
enclaves whose permissions let one identity publish ``/handover/safety/latched`` and serve
``/handover/estop/reset``) makes that impossible; see the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

SAFETY_NODE_NAME = "safety"
UNKNOWN_NODE_NAMES = ("_NODE_NAME_UNKNOWN_", "")  # what the graph says before a participant's node list arrived
RELEASE_RECHECK_S = 0.1  # s (steady clock): how often a pending release is checked again
RELEASE_PENDING_S = 3.0  # s: how long a pending release is checked before it counts as refused


@dataclass
class EstopLatch:
    """The safety node's latch. Starts latched (a restarted safety node never releases a stop)."""

    latched: bool = True
    last_estop: bool = False
    stops: int = 0  # how many times a true on the estop topic latched it (not counting the start)

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
            return True, "not latched: nothing to reset (the released state is published again)"
        self.latched = False
        return True, "released: the safety stop is reset"


# -- who may release ---------------------------------------------------------------------------


def _fqn(name: str, namespace: str) -> str:
    return (namespace.rstrip("/") + "/" + name) if namespace else "/" + name


def release_check(publishers: Sequence[tuple[str, str]], safety_name: str = SAFETY_NODE_NAME,
                  safety_namespace: str = "/") -> tuple[str, str]:
    """May a ``false`` on the latch topic release, given the topic's publishers at that moment
    (``(node_name, node_namespace)`` pairs, as ``get_publishers_info_by_topic`` lists them)?

    Returns ``(verdict, why)``: ``"release"`` (every publisher is the safety node), ``"pending"``
    (no publisher, or some publisher's node is not known yet: ask again a little later) or
    ``"refused"`` (a publisher that is not the safety node: ``why`` names it)."""
    if not publishers:
        return "pending", "no publisher of the latch topic is known yet"
    unknown = [p for p in publishers if p[0] in UNKNOWN_NODE_NAMES]
    foreign = sorted({_fqn(n, ns) for n, ns in publishers
                      if n not in UNKNOWN_NODE_NAMES and (n, ns.rstrip("/") or "/") != (safety_name, safety_namespace.rstrip("/") or "/")})
    if foreign:
        return "refused", (f"the latch topic has publishers other than the safety node "
                           f"{_fqn(safety_name, safety_namespace)}: {', '.join(foreign)}")
    if unknown:
        return "pending", f"{len(unknown)} publisher(s) of the latch topic not yet identified"
    return "release", ""


class StopRules:
    """What one listening node does with the stop topics (pure; :func:`listen_for_stop` wires it).

    ``stopped``: the node's view of the stop. ``initially_stopped=True`` for a node that must not
    act before the safety node released the stop (the policy node); drivers start unstopped and
    disarmed (they follow no command before an episode starts while they are up).

    Counters for diagnostics: :attr:`releases` (accepted), :attr:`releases_refused` (a ``false``
    not from the safety node, or still unidentified after :data:`RELEASE_PENDING_S`),
    :attr:`last_refusal` (why)."""

    def __init__(self, initially_stopped: bool = False, safety_name: str = SAFETY_NODE_NAME,
                 safety_namespace: str = "/"):
        self.stopped = bool(initially_stopped)
        self.last_estop = False
        self.safety = (safety_name, safety_namespace)
        self.releases = 0
        self.releases_refused = 0
        self.last_refusal = ""
        self.pending_since: Optional[float] = None  # s (steady clock) when a pending release arrived

    def on_estop(self, value: bool) -> bool:
        """A message on the estop topic; True if the node must stop now (it was not stopped)."""
        self.last_estop = bool(value)
        if value:
            self.pending_since = None
            return self._stop()
        return False

    def on_latched(self, value: bool, publishers: Sequence[tuple[str, str]], now: float) -> str:
        """A message on the latch topic at ``now`` (s, steady clock) with the topic's publishers as
        the graph lists them. Returns ``"stop"``, ``"release"`` or ``""`` (nothing to do)."""
        if value:
            self.pending_since = None
            return "stop" if self._stop() else ""
        if not self.stopped:
            return ""  # nothing to release
        if self.last_estop:
            # a stale "released" from before this node's newest stop must not undo it
            self.pending_since = None
            return ""
        self.pending_since = now
        return self.recheck(publishers, now)

    def recheck(self, publishers: Sequence[tuple[str, str]], now: float) -> str:
        """Decide a pending release again (a timer calls this); ``"release"`` or ``""``."""
        if self.pending_since is None or not self.stopped or self.last_estop:
            self.pending_since = None
            return ""
        verdict, why = release_check(publishers, *self.safety)
        if verdict == "release":
            self.pending_since = None
            self.stopped = False
            self.releases += 1
            return "release"
        if verdict == "refused" or now - self.pending_since > RELEASE_PENDING_S:
            self.pending_since = None
            self.releases_refused += 1
            self.last_refusal = why if verdict == "refused" else f"{why} after {RELEASE_PENDING_S:g} s"
        return ""

    def _stop(self) -> bool:
        if self.stopped:
            return False  # callbacks fire once per transition
        self.stopped = True
        return True

    def values(self) -> dict:
        """Counters for ``/diagnostics``."""
        out = {"latch_releases": self.releases, "latch_releases_refused": self.releases_refused}
        if self.last_refusal:
            out["latch_last_refusal"] = self.last_refusal
        return out


class StopListener:
    """The subscriptions of :func:`listen_for_stop` and its :class:`StopRules` (:attr:`rules`)."""

    def __init__(self, rules: StopRules, subscriptions: list, timer):
        self.rules = rules
        self.subscriptions = subscriptions
        self.timer = timer

    def values(self) -> dict:
        return self.rules.values()


def listen_for_stop(node, topics, on_stop: Callable[[], None], on_release: Callable[[], None], callback_group=None,
                    initially_stopped: bool = False, log_refusals: bool = True) -> StopListener:
    """Subscribe ``node`` to the estop (``true`` -> ``on_stop()``) and to the latch topic (``true``
    from anyone -> ``on_stop()``; ``false`` from the safety node -> ``on_release()``, see
    :class:`StopRules`). Each callback fires once per transition. Both topics: reliable, transient
    local, the subscriber queues 10. A steady-clock timer every :data:`RELEASE_RECHECK_S` re-checks a
    pending release (it does nothing otherwise). All three share ``callback_group`` (give them a
    mutually exclusive one). Returns the :class:`StopListener` (keep it referenced)."""
    import time

    from rclpy.clock import Clock, ClockType
    from std_msgs.msg import Bool

    from handover.runtime.ros_interface import qos_latched

    rules = StopRules(initially_stopped, SAFETY_NODE_NAME, node.get_namespace())
    topic = topics.safety_latched

    def publishers() -> list[tuple[str, str]]:
        return [(i.node_name, i.node_namespace) for i in node.get_publishers_info_by_topic(topic)]

    def act(verdict: str) -> None:
        if verdict == "stop":
            on_stop()
        elif verdict == "release":
            on_release()

    def estop(msg: Bool) -> None:
        if rules.on_estop(msg.data):
            on_stop()

    def latched(msg: Bool) -> None:
        refused = rules.releases_refused
        act(rules.on_latched(bool(msg.data), [] if msg.data else publishers(), time.monotonic()))
        if log_refusals and rules.releases_refused != refused:
            node.get_logger().error(f"{topic}: a release was ignored: {rules.last_refusal}")

    def recheck() -> None:
        if rules.pending_since is None:
            return
        refused = rules.releases_refused
        act(rules.recheck(publishers(), time.monotonic()))
        if log_refusals and rules.releases_refused != refused:
            node.get_logger().error(f"{topic}: a release was ignored: {rules.last_refusal}")

    subs = [
        node.create_subscription(Bool, topics.estop, estop, qos_latched(depth=10), callback_group=callback_group),
        node.create_subscription(Bool, topic, latched, qos_latched(depth=10), callback_group=callback_group),
    ]
    timer = node.create_timer(RELEASE_RECHECK_S, recheck, callback_group=callback_group,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
    return StopListener(rules, subs, timer)
