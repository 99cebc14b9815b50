"""``ENKASH_LOG=debug|info|warning``: see what the SDK does without configuring logging.

Like ``OPENAI_LOG``: when set, and when the application configured no handler for the
``enkash_coins`` logger (nor the root logger), a stderr handler is attached at that
level. Log lines never hold a secret: tokens, passwords and client secrets are not
logged at any level.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

__all__ = ["LEVELS", "setup"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str | int | None = None, env: Mapping[str, str] = os.environ) -> logging.Handler | None:
    """Attach a stderr handler to the ``enkash_coins`` logger at ``level`` (default: ``$ENKASH_LOG``).

    Does nothing when no level is asked for, or when the application already
    configured logging (its handlers win). Returns the handler it attached.
    """
    if level is None:
        name = env.get("ENKASH_LOG", "").strip().lower()
        if not name:
            return None
        if name not in LEVELS:
            print(f"enkash_coins: ignoring ENKASH_LOG={name!r}; use one of {', '.join(LEVELS)}", file=sys.stderr)
            return None
        level = LEVELS[name]
    elif isinstance(level, str):
        level = LEVELS[level]
    logger = logging.getLogger("enkash_coins")
    if logger.handlers or logging.getLogger().handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
