"""``python -m tests.soak``: see :mod:`tests.soak.cli` (``scripts/soak`` runs it)."""

from tests.soak.cli import main

raise SystemExit(main())
