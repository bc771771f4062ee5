"""The errors an operator can fix (bad config, bad input file, bad bundle or checkpoint).

The ``handover`` command prints these as one line and exits with code 2; anything else is a bug.
The config's and the bundle's own errors (``ConfigError``, ``BundleError``) live with their loaders;
the CLI lists all of them (``handover.cli.operator_errors``). This module imports nothing of
the package, so every module can use :class:`InputError`.
"""


class InputError(ValueError):
    """An input (a file, a command-line value, a log, a checkpoint, an array) is missing or
    malformed; the message names it and where it came from."""
