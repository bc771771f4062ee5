"""What a long-running command has done so far, for the one line ``handover`` prints when it is
interrupted (SIGINT, SIGTERM). Commands call :func:`report` as they progress (e.g. "12 of 100
episodes run; no report written yet"); :func:`done` is read once, after the command's cleanup.
Process-wide and last-writer-wins: one command runs per process."""

from __future__ import annotations

_done = ""


def report(text: str) -> None:
    """Replace what the command says it has done so far."""
    global _done
    _done = text


def done() -> str:
    """The last :func:`report` ("" if none)."""
    return _done
