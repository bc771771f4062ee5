"""Helpers the test modules share (``pythonpath = ["tests"]`` in pyproject makes this importable:
``--import-mode=importlib`` keeps test modules from importing each other).

- :func:`wait_for`: poll a predicate until it is truthy or a timeout (wall clock) passes.
- :class:`Spinners`: ROS 2 executors spun by threads of ours, and their orderly shutdown.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


def wait_for(predicate: Callable, timeout: float = 2.0, what: str = "condition", poll: float = 0.005):
    """``predicate()``'s first truthy value within ``timeout`` s (polled every ``poll`` s), else an
    AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Spinners:
    """Executors, each spun by a thread of ours (``spin_once`` until :meth:`close`), bodies run in a
    loop by threads of ours, and the nodes to destroy at the end.

    :meth:`close` stops spinning first, then shuts the executors down, then destroys the nodes:
    rclpy 7's ``Executor.shutdown`` destroys its guard condition without waiting for a spinning
    thread or for callbacks already handed to a thread pool."""

    def __init__(self) -> None:
        self.executors: list = []
        self.threads: list[threading.Thread] = []
        self.nodes: list = []
        self.stopping = threading.Event()

    def loop(self, body: Callable[[], None], name: str = "loop") -> None:
        """Run ``body()`` again and again in a thread of its own until :meth:`close`."""
        def run():
            while not self.stopping.is_set():
                body()

        self.threads.append(threading.Thread(target=run, name=name, daemon=True))
        self.threads[-1].start()

    def spin(self, executor, name: str = "executor", lock: Optional[threading.Lock] = None):
        """Spin ``executor`` in a thread until :meth:`close`; with ``lock``, each ``spin_once`` holds
        it (and yields after it, so that a waiter gets it between two spins). Returns ``executor``."""
        def once():
            if lock is None:
                executor.spin_once(timeout_sec=0.05)
                return
            with lock:
                executor.spin_once(timeout_sec=0.05)
            time.sleep(0)

        self.executors.append(executor)
        self.loop(once, f"executor-{name}")
        return executor

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(2.0)
        time.sleep(0.05)
        for executor in self.executors:
            executor.shutdown(timeout_sec=2.0)
        for node in self.nodes:
            node.destroy_node()
