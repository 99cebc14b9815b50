"""One-off commands: allocate, balance, events create|get|update. Output is JSON on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from .._client import CoinAllocator
from .._exceptions import EnKashError
from .._ids import new_request_id
from . import _exit
from ._config import ConfigError, Connection, add_connection_flags, connect, verbosity

__all__ = ["add_parsers"]

Action = Callable[[CoinAllocator, argparse.Namespace], Awaitable[Any]]


def _command(commands: Any, name: str, help: str, action: Action, *, company: bool) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help, parents=[verbosity()])
    add_connection_flags(p, company=company)
    p.set_defaults(run=lambda args: _run(action, args, company=company))
    return p


def add_parsers(commands: Any) -> None:
    p = _command(commands, "allocate", "allocate coins to one user", _allocate, company=True)
    p.add_argument("--user-id", required=True)
    p.add_argument("--event", required=True)
    p.add_argument("--request-id", help="idempotency key; generated (and printed) if omitted")

    p = _command(commands, "balance", "print a user's coin balance", _balance, company=False)
    p.add_argument("--user-id", required=True)

    events = commands.add_parser("events", help="create, read or update coin event configurations")
    sub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    p = _command(sub, "create", "configure an event", _create, company=True)
    p.add_argument("--event", required=True)
    p.add_argument("--amount", type=int, required=True)
    p.add_argument("--configuration", default="DEFAULT", choices=["DEFAULT", "CUSTOM"])
    p = _command(sub, "get", "show an event configuration", _get, company=False)
    p.add_argument("coin_config_id")
    p = _command(sub, "update", "change an event configuration (only the given fields)", _update, company=False)
    p.add_argument("coin_config_id")
    p.add_argument("--amount", type=int)
    p.add_argument("--configuration", choices=["DEFAULT", "CUSTOM"])
    p.add_argument("--event")
    p.add_argument("--company-id", dest="new_company_id", help="move the event to this company")


async def _allocate(coins: CoinAllocator, args: argparse.Namespace) -> Any:
    return await coins.allocate(user_id=args.user_id, event=args.event, request_id=args.request_id)


def _replay_hint(request_id: str | None) -> str:
    """For an allocation that may have been applied: the id to finish it with (a new id credits again)."""
    if request_id is None:
        return ""
    return (f"requestId {request_id}: the allocation may have been applied. To finish it, run the same "
            f"command with --request-id {request_id} (never without it: a new id would credit again)")


async def _balance(coins: CoinAllocator, args: argparse.Namespace) -> Any:
    return {"user_id": args.user_id, "balance": await coins.get_balance(user_id=args.user_id)}


async def _create(coins: CoinAllocator, args: argparse.Namespace) -> Any:
    return await coins.create_event(event=args.event, amount=args.amount, configuration=args.configuration)


async def _get(coins: CoinAllocator, args: argparse.Namespace) -> Any:
    return await coins.get_event(args.coin_config_id)


async def _update(coins: CoinAllocator, args: argparse.Namespace) -> Any:
    return await coins.update_event(args.coin_config_id, amount=args.amount, configuration=args.configuration,
                                    event=args.event, company_id=args.new_company_id)


async def _call(action: Action, args: argparse.Namespace, *, company: bool) -> Any:
    connection = Connection.of(args)
    if company and connection.company_id is None:  # before any token request or connection
        raise ConfigError("no company: pass --company-id or set ENKASH_COMPANY_ID")
    async with connect(connection) as coins:
        return await action(coins, args)


def _run(action: Action, args: argparse.Namespace, *, company: bool) -> int:
    allocation: str | None = None  # the requestId of an allocation, to show if its outcome is unknown
    if action is _allocate:
        if args.request_id is None:  # generated here, so it can be shown whatever happens
            args.request_id = new_request_id()
        allocation = args.request_id
    try:
        result = asyncio.run(_call(action, args, company=company))
    except KeyboardInterrupt:
        hint = _replay_hint(allocation)
        print("interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return _exit.INTERRUPTED
    except Exception as exc:
        print(_exit.describe(exc), file=sys.stderr)
        hint = _replay_hint(allocation) if isinstance(exc, EnKashError) and exc.outcome_unknown else ""
        if hint:
            print(hint, file=sys.stderr)
        return _exit.exit_code(exc)
    data = attrs.asdict(result) if attrs.has(type(result)) else result
    print(json.dumps(data, default=str, indent=2))
    return _exit.OK
