"""``python -m mamba_ode`` — the same as the ``mamba-ode`` command."""

from .cli import main

raise SystemExit(main())
