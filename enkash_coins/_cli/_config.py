"""Building an allocator from flags and ENKASH_* environment variables, for every command."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import attrs

from .._auth import Auth, PasswordGrant, StaticToken
from .._client import CoinAllocator
from .._exceptions import AuthenticationError, EnKashError, InvalidInputError
from .._retry import RetryPolicy
from .._transports import AiohttpTransport
from . import _exit
from ._guard import TokenGuard

__all__ = ["ConfigError", "Connection", "add_connection_flags", "connect", "env_default", "from_env", "verbosity"]

SECRETS = ("ENKASH_USERNAME", "ENKASH_PASSWORD", "ENKASH_CLIENT_ID", "ENKASH_CLIENT_SECRET")
T = TypeVar("T")


class ConfigError(InvalidInputError):
    """The command line or environment does not say how to reach EnKash."""


def verbosity() -> argparse.ArgumentParser:
    """-v / -q, accepted before or after the command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="log what the SDK does on stderr: -v retries and warnings, -vv every request "
                        "(no secret is ever logged; env ENKASH_LOG=info|debug does the same)")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress line or notes; the summary and errors only")
    return p


def env_default(help: str, env: str, default: object = None) -> str:
    """A flag's help text that names its environment variable and default."""
    shown = "" if default is None else f"; default {default}"
    return f"{help} (env {env}{shown})"


def add_connection_flags(parser: argparse.ArgumentParser, *, company: bool = True) -> None:
    group = parser.add_argument_group(
        "connection",
        "Credentials come from the environment only (never flags, which leak into `ps`): "
        "ENKASH_TOKEN, or ENKASH_USERNAME, ENKASH_PASSWORD, ENKASH_CLIENT_ID and ENKASH_CLIENT_SECRET "
        "(plus ENKASH_TOKEN_URL if the token endpoint is on another host).",
    )
    group.add_argument("--base-url", help=env_default("EnKash API host given to you by EnKash", "ENKASH_BASE_URL"))
    if company:  # only on commands that send a company
        group.add_argument("--company-id", help=env_default("company to allocate for", "ENKASH_COMPANY_ID"))
    group.add_argument("--timeout", metavar="SECONDS",
                       help=env_default("seconds per attempt", "ENKASH_TIMEOUT", 10))
    group.add_argument("--max-attempts", metavar="N",
                       help=env_default("attempts per call, retries included", "ENKASH_MAX_ATTEMPTS", 4))
    group.add_argument("--allow-insecure-http", action="store_true", default=None,
                       help=env_default("allow http:// to a host other than this machine (tokens travel in clear)",
                                        "ENKASH_ALLOW_INSECURE_HTTP=1"))
    group.add_argument("--credentials-fixed", action="store_true",
                       help="the token endpoint refused these credentials in earlier runs and you have fixed "
                            "them: allow a token request again (EnKash locks the account after 3 refusals)")


def from_env(value: str | None, env: Mapping[str, str], name: str, flag: str, convert: Callable[[str], T],
             default: T, check: Callable[[T], bool], what: str) -> T:
    """A setting from its flag, else its environment variable, else ``default``; checked."""
    raw = value if value is not None else env.get(name)
    if raw is None or raw == "":
        return default
    try:
        result: T | None = convert(raw)
    except ValueError:
        result = None
    if result is None or not check(result):
        source = flag if value is not None else name
        raise ConfigError(f"{source} must be {what}, not {raw!r}")
    return result


def _positive(x: float) -> bool:
    return 0 < x < math.inf


@attrs.frozen(kw_only=True)
class Connection:
    """Everything needed to reach EnKash, resolved from flags and the environment."""

    base_url: str
    company_id: str | None
    timeout: float
    max_attempts: int
    allow_insecure_http: bool
    credentials_fixed: bool

    @classmethod
    def of(cls, args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Connection:
        base_url = getattr(args, "base_url", None) or env.get("ENKASH_BASE_URL")
        if not base_url:
            raise ConfigError(
                "no EnKash base URL: pass --base-url or set ENKASH_BASE_URL to the host EnKash gave you. "
                "(To try things without EnKash, run `enkash-coins demo`, or `enkash-coins serve` and point "
                "ENKASH_BASE_URL at it.)"
            )
        auth_from(env)  # credentials present and well-formed: fail before anything is touched
        insecure = getattr(args, "allow_insecure_http", None)
        if insecure is None:
            insecure = env.get("ENKASH_ALLOW_INSECURE_HTTP", "").lower() in ("1", "true", "yes")
        return cls(
            base_url=base_url,
            company_id=company_from(args, env),
            timeout=from_env(getattr(args, "timeout", None), env, "ENKASH_TIMEOUT", "--timeout", float, 10.0,
                             _positive, "a number of seconds > 0"),
            max_attempts=from_env(getattr(args, "max_attempts", None), env, "ENKASH_MAX_ATTEMPTS",
                                  "--max-attempts", int, 4, lambda n: 1 <= n <= 100, "an integer from 1 to 100"),
            allow_insecure_http=bool(insecure),
            credentials_fixed=bool(getattr(args, "credentials_fixed", False)),
        )


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


def _cli_words(error: InvalidInputError) -> ConfigError:
    """An SDK validation message, in the words of the command line."""
    return ConfigError(_exit.cli_words(error.message))


@contextlib.asynccontextmanager
async def connect(connection: Connection, env: Mapping[str, str] = os.environ,
                  **allocator: Any) -> AsyncIterator[CoinAllocator]:
    """An open allocator for a real run (never the fake), with the token guard around it."""
    try:
        transport = AiohttpTransport(connection.base_url, timeout=connection.timeout,
                                     allow_insecure_http=connection.allow_insecure_http)
        auth = auth_from(env)
    except ConfigError:
        raise
    except InvalidInputError as exc:
        raise _cli_words(exc) from None
    coins = CoinAllocator(transport, auth=auth, company_id=connection.company_id,
                          retry=RetryPolicy(max_attempts=connection.max_attempts), **allocator)
    async with coins:
        if not isinstance(auth, PasswordGrant):
            yield coins
            return
        guard = TokenGuard.of(auth, transport.base_url, env)
        try:
            first = contextlib.ExitStack()
            try:  # runs started together take their first token one at a time
                first.enter_context(guard.locked())
            except OSError as exc:  # fail closed: without the record, reruns could lock the account
                raise ConfigError(
                    f"cannot use {guard.path.parent} to record failed token requests ({exc.strerror or exc}). "
                    "EnKash locks an account after 3 consecutive failed token requests, and this record is how "
                    "reruns avoid that: set ENKASH_STATE_DIR to a writable directory") from None
            with first:
                _warn(guard.clear() if connection.credentials_fixed else None)
                why = guard.blocked()
                if why:
                    raise ConfigError(f"not asking for a token: {why}")
                try:
                    await auth.get_token(transport)  # refused credentials end the run before anything is sent
                except AuthenticationError:
                    raise
                except EnKashError:
                    pass  # transient: the calls will ask again, within their retries
                finally:
                    _warn(guard.settle(auth))
            yield coins
        finally:
            try:
                with guard.locked():
                    _warn(guard.settle(auth))
            except OSError as exc:
                _warn(f"warning: cannot record failed token requests in {guard.path}: {exc.strerror or exc}")


def _warn(warning: str | None) -> None:
    if warning:
        print(warning, file=sys.stderr)
