"""The errors an operator can fix (bad config, bad input file, bad bundle or checkpoint).

The ``handover`` command prints these as one line and exits with code 2; anything else is a bug.
"""

from handover.runtime.bundle import BundleError
from handover.runtime.cell_config import ConfigError


class InputError(ValueError):
    """An input file (a log, a checkpoint, an array) is missing or malformed; the message names it."""


OPERATOR_ERRORS = (ConfigError, BundleError, InputError, FileNotFoundError)
