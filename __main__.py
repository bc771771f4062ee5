"""``python -m handover`` is the ``handover`` command."""

from handover.cli import main

raise SystemExit(main())
