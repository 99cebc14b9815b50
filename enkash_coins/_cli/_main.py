"""Argument parsing and dispatch for ``enkash-coins``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._logging import setup
from .._version import __version__
from . import _bulk, _commands, _demo, _serve
from ._config import verbosity

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enkash-coins", description="Credit EnKash loyalty coins.",
                                     parents=[verbosity()])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo.add_parser(commands)
    _serve.add_parser(commands)
    _bulk.add_parser(commands)
    _commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    verbose, quiet = getattr(args, "verbose", 0), getattr(args, "quiet", False)
    args.quiet = quiet
    if verbose:
        setup(logging.DEBUG if verbose > 1 else logging.INFO)
    elif quiet:
        logging.getLogger("enkash_coins").setLevel(logging.ERROR)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
