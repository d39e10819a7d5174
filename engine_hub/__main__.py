"""``python -m engine_hub``: the same as the ``engine-hub`` console script."""

from __future__ import annotations

from engine_hub.cli.main import main

raise SystemExit(main())
