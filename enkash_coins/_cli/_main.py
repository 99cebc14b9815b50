"""Argument parsing and dispatch for ``enkash-coins``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .._version import __version__
from . import _serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enkash-coins", description="Credit EnKash loyalty coins.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run a short demo against the embedded fake EnKash")
    demo.set_defaults(run=_demo)
    _serve.add_parser(commands)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return asyncio.run(run_demo())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
