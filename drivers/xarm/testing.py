"""Helpers for running emulated xArm controllers in tests and benchmarks (no pytest import).

Each emulator needs its own IP address (the SDK's ports are fixed): :func:`loopback_address` gives
a loopback address (127.0.0.0/8 is all loopback on Linux) that nothing listens on yet, so that
parallel test processes do not collide.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

from handover.drivers.xarm.protocol import COMMAND_PORT

_counter = itertools.count()


def port_502_problem() -> str:
    """Why port 502 cannot be bound here ('' if it can): it needs root, CAP_NET_BIND_SERVICE or a
    private network namespace (``unshare -rn``)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((loopback_address(), COMMAND_PORT))
        return ""
    except OSError as exc:
        return (f"cannot bind port {COMMAND_PORT} ({exc.strerror}; euid {os.geteuid()}): run as root, with "
                "CAP_NET_BIND_SERVICE, or under `unshare -rn`")
    finally:
        s.close()


def loopback_address(preferred: str | None = None) -> str:
    """``preferred`` if port 502 is free on it, else a random 127.x.y.z whose port 502 is free."""
    candidates = ([preferred] if preferred else []) + [
        f"127.{random.randint(1, 254)}.{(os.getpid() + next(_counter)) % 254 + 1}.{random.randint(2, 254)}"
        for _ in range(50)]
    for address in candidates:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((address, COMMAND_PORT))
            return address
        except OSError:
            continue
        finally:
            s.close()
    raise OSError(f"no free loopback address for port {COMMAND_PORT}")
