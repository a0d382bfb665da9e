"""``python -m indexer.cli``."""

from indexer.cli import main

raise SystemExit(main())
