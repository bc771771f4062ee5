"""Which commands a driver may follow, and which outputs the policy may publish (pure rules).

Episode tokens: every joint command carries the episode it belongs to in ``header.frame_id``, as
``"<policy instance id>/<episode number>"`` (:func:`make_token`; the instance id is a fresh
``uuid4`` hex per policy node, so a restarted policy never reuses a token). The policy announces
each episode it starts on ``/handover/policy/episode_start`` (``std_msgs/String``, the token;
reliable, **volatile**: a node that starts later never receives an earlier announcement).

The rule (:class:`EpisodeArming`): a driver follows only commands whose token equals the last
episode start it received while it was up and not stopped. It starts disarmed, a safety stop
disarms it, and a start received while stopped does not arm it. So a driver that starts or
restarts mid-episode, or after a release, holds its measured position until the next start; the
policy's hold of the last targets after an episode keeps the episode's token and is still followed.

The policy's output check (:func:`command_problem`): every command is checked before it is
published; one that is not all finite is never published and aborts the episode.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


def new_instance_id() -> str:
    """A fresh id for one policy node's lifetime (32 hex digits)."""
    return uuid.uuid4().hex


def make_token(instance_id: str, episode: int) -> str:
    """The token of episode ``episode`` of the policy instance ``instance_id``."""
    if not instance_id or "/" in instance_id:
        raise ValueError(f"make_token: instance id must be non-empty without '/', got {instance_id!r}")
    return f"{instance_id}/{int(episode)}"


@dataclass
class EpisodeArming:
    """A driver's view of the episode it may follow. Not thread safe (the driver holds its lock).

    Counters: :attr:`starts` (starts that armed it), :attr:`starts_ignored` (received while
    stopped), :attr:`commands_ignored` (commands whose token is not the armed one),
    :attr:`last_ignored` (the token of the last such command)."""

    armed: Optional[str] = None
    starts: int = 0
    starts_ignored: int = 0
    commands_ignored: int = 0
    last_ignored: str = ""

    def on_start(self, token: str, stopped: bool) -> bool:
        """An episode start announcement; True if it armed the driver (not stopped, token not empty)."""
        if stopped or not token:
            self.starts_ignored += 1
            return False
        self.armed = token
        self.starts += 1
        return True

    def disarm(self) -> None:
        """A safety stop (or the driver's own start): follow nothing until the next start."""
        self.armed = None

    def accepts(self, token: str) -> bool:
        """May a command with ``token`` be followed? Counts the refusals."""
        if self.armed is not None and token == self.armed:
            return True
        self.commands_ignored += 1
        self.last_ignored = token
        return False

    def why_ignored(self, token: str) -> str:
        """A sentence for the diagnostics: why a command with ``token`` is not followed."""
        shown = repr(token) if token else "no episode token"
        if self.armed is None:
            return (f"ignoring commands ({shown}): no episode started while this driver is up; "
                    "holding the measured position until the next start")
        return f"ignoring commands ({shown}): not the started episode {self.armed!r}"

    def values(self) -> dict:
        return {"armed_episode": self.armed or "", "episode_starts": self.starts,
                "episode_starts_ignored_while_stopped": self.starts_ignored,
                "commands_ignored_not_started": self.commands_ignored}


def command_problem(targets, names=None) -> Optional[str]:
    """Why ``targets`` (rad) must not be published, or None: not a 1-d array of finite numbers
    (``names``: the joints, to name the first bad one)."""
    try:
        a = np.asarray(targets, dtype=float)
    except (TypeError, ValueError) as exc:
        return f"targets are not numbers: {exc}"
    if a.ndim != 1 or (names is not None and a.size != len(names)):
        return f"targets have shape {a.shape}, expected ({len(names) if names is not None else 'n'},)"
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        i = int(bad[0])
        who = names[i] if names is not None else f"index {i}"
        return f"target of {who} is not finite ({a[i]}); {bad.size} non-finite value(s)"
    return None


@dataclass
class CellWatch:
    """Is the cell still there? ``lost_after_s``: no joint state from any group for this long (s,
    the caller's clock) means the cell is lost. Feed it the newest receive time each tick."""

    lost_after_s: float
    lost: str = ""  # why the cell counts as lost ("" while it is there)
    _seen: bool = field(default=False, repr=False)

    def check(self, newest_received: Optional[float], now: float) -> tuple[str, bool]:
        """``(lost_reason, changed)`` at ``now``: ``lost_reason`` is "" while joint states arrive
        (or before the first one: a cell never seen is not lost); ``changed`` on every transition."""
        if newest_received is None:
            return self.lost, False
        self._seen = True
        age = now - newest_received
        was = self.lost
        if age > self.lost_after_s:
            if not was:
                self.lost = f"cell lost: no joint states for {age:.2f} s (limit {self.lost_after_s:g} s)"
        else:
            self.lost = ""
        return self.lost, bool(was) != bool(self.lost)
