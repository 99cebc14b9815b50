"""``python -m enkash_coins`` is the ``enkash-coins`` command."""

from ._cli import main

raise SystemExit(main())
