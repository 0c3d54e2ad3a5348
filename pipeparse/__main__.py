"""``python -m pipeparse``: the `pipeparse` command (`pipeparse.cli`)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
