"""The vendor's words for xArm codes, from the SDK's own tables.

- Controller error and warning codes (``get_err_warn_code``, the reports): the SDK's
  ``xarm.core.config.x_code`` tables (``ControllerError`` / ``ControllerWarn``: a title and a
  description per code, English and Chinese; we use English).
- Return codes of the SDK's calls (``xarm.x3.code.APIState``): the constant's name, with the meaning
  of the SDK's own comment next to it (the SDK comments are Chinese; translated here).
- Controller states (``get_state``; the SDK's documentation of ``XArmAPI.state``).

The SDK is imported lazily: these helpers work (with numbers only) where it is not installed.
"""

from __future__ import annotations

# Meanings of the SDK's return codes (xarm/x3/code.py, APIState, and XCONF.UxbusState comments).
_API_MEANINGS = {
    -1: "not connected",
    -2: "not ready to move (motion not enabled or state not set)",
    -3: "API exception (parameter error?)",
    -4: "command does not exist",
    -7: "joint angle limit",
    -8: "out of range (the SDK's joint limits for this model)",
    -9: "emergency stop",
    0: "normal",
    1: "the controller has an uncleared error",
    2: "the controller has an uncleared warning",
    3: "reply timeout",
    4: "TCP reply length error",
    5: "TCP reply sequence number error",
    6: "TCP protocol flag error",
    7: "TCP reply does not match the command sent",
    8: "send error (connection lost)",
    9: "not ready to move",
    10: "result invalid or execution failed",
    11: "other error",
    12: "parameter error",
}

# XArmAPI.state: the SDK's documentation of the property.
STATE_MEANINGS = {0: "ready", 1: "in motion", 2: "sleeping", 3: "suspended", 4: "stopping", 5: "stopped"}


def api_code_text(code: int) -> str:
    """``"3 (RES_TIMEOUT: reply timeout)"`` for a return code of an SDK call."""
    name = None
    try:
        from xarm.x3.code import APIState  # noqa: PLC0415 - the SDK is optional at import time

        name = next((k for k, v in vars(APIState).items() if k.isupper() and v == code), None)
    except ImportError:
        pass
    meaning = _API_MEANINGS.get(code, "unknown return code")
    return f"{code} ({name}: {meaning})" if name else f"{code} ({meaning})"


def _lookup(code: int, kind: str) -> tuple[str, str]:
    try:
        from xarm.core.config.x_code import ControllerError, ControllerWarn  # noqa: PLC0415
    except ImportError:
        return f"controller {kind} {code}", ""
    info = (ControllerError if kind == "error" else ControllerWarn)(code, status=0)
    return info.title["en"], info.description["en"]


def controller_error_text(code: int) -> str:
    """``"error 31: Collision Caused Abnormal Current (Please check for collisions, ...)"``: the SDK's
    title and description of a controller error code."""
    title, desc = _lookup(code, "error")
    return f"error {code}: {title}" + (f" ({desc})" if desc else "")


def controller_warn_text(code: int) -> str:
    """``"warning 11: Current controller cache is full"``: the SDK's words for a warning code."""
    title, desc = _lookup(code, "warning")
    return f"warning {code}: {title}" + (f" ({desc})" if desc else "")


def state_text(state: int) -> str:
    return f"{state} ({STATE_MEANINGS.get(state, 'unknown')})"
