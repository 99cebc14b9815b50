"""Building an allocator from flags and ENKASH_* environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from .._auth import Auth, PasswordGrant, StaticToken
from .._client import CoinAllocator
from .._exceptions import InvalidInputError
from .._retry import RetryPolicy
from .._transports import AiohttpTransport

__all__ = ["ConfigError", "add_connection_flags", "build_allocator", "company_from"]

SECRETS = ("ENKASH_USERNAME", "ENKASH_PASSWORD", "ENKASH_CLIENT_ID", "ENKASH_CLIENT_SECRET")


class ConfigError(InvalidInputError):
    """The command line or environment does not say how to reach EnKash."""


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "connection",
        "Credentials come from the environment only (never flags, which leak into `ps`): "
        "ENKASH_TOKEN, or ENKASH_USERNAME, ENKASH_PASSWORD, ENKASH_CLIENT_ID and ENKASH_CLIENT_SECRET "
        "(plus ENKASH_TOKEN_URL if the token endpoint is on another host).",
    )
    group.add_argument("--base-url", help="EnKash API host given to you by EnKash (default: $ENKASH_BASE_URL)")
    group.add_argument("--company-id", help="company to allocate for (default: $ENKASH_COMPANY_ID)")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (default 10)")
    group.add_argument("--max-attempts", type=int, default=4, help="attempts per call, retries included (default 4)")


def company_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> str | None:
    value = getattr(args, "company_id", None) or env.get("ENKASH_COMPANY_ID")
    return value or None


def auth_from(env: Mapping[str, str]) -> Auth:
    if env.get("ENKASH_TOKEN"):
        return StaticToken(env["ENKASH_TOKEN"])
    present = [name for name in SECRETS if env.get(name)]
    if len(present) == len(SECRETS):
        return PasswordGrant(
            username=env["ENKASH_USERNAME"], password=env["ENKASH_PASSWORD"],
            client_id=env["ENKASH_CLIENT_ID"], client_secret=env["ENKASH_CLIENT_SECRET"],
            token_url=env.get("ENKASH_TOKEN_URL") or None,
        )
    missing = [name for name in SECRETS if name not in present]
    raise ConfigError(
        "no EnKash credentials: set ENKASH_TOKEN, or all of " + ", ".join(SECRETS)
        + (f" (missing: {', '.join(missing)})" if present else "")
    )


def build_allocator(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> CoinAllocator:
    """An allocator for a real run. Never falls back to the fake."""
    base_url = args.base_url or env.get("ENKASH_BASE_URL")
    if not base_url:
        raise ConfigError(
            "no EnKash base URL: pass --base-url or set ENKASH_BASE_URL to the host EnKash gave you. "
            "(To try things without EnKash, run `enkash-coins demo`, or `enkash-coins serve` and point "
            "ENKASH_BASE_URL at it.)"
        )
    return CoinAllocator(
        AiohttpTransport(base_url, timeout=args.timeout),
        auth=auth_from(env),
        company_id=company_from(args, env),
        retry=RetryPolicy(max_attempts=args.max_attempts),
    )
