"""An aiohttp.web service that awards EnKash coins when an order is paid.

    POST /orders/{order_id}/paid    {"user_id": "EKQZVMQK"}

Your checkout or payment provider calls this webhook when an order is paid, and may
call it more than once. The service credits the user the coins configured for one
event (``ORDER_PAID``), at most once per order:

* ONE ``CoinAllocator`` for the app's lifetime, opened in a ``cleanup_ctx`` and closed
  on shutdown: one connection pool, one cached token, one retry budget for all requests.
* The requestId is derived from the order id (``derive_request_id``). A repeated
  webhook, or a retry after an unknown outcome, sends the same requestId, which
  EnKash applies at most once.
* The SDK's typed errors become HTTP answers the caller can act on:

  ===== ============== =====================================================================
  200   credited       done; a repeat of the same webhook answers 200 again, crediting nothing
  400   invalid        the body or the user_id is unusable; nothing was sent
  422   refused        EnKash refused this credit (e.g. the event is not configured); not applied
  503   unknown        it MAY have been credited: call again later with the same order (never
                       treated as failed; the replay cannot credit twice). ``Retry-After`` set
  503   not_credited   not applied (EnKash unreachable, rate limited, credentials refused):
                       call again later. ``Retry-After`` set
  ===== ============== =====================================================================

Configuration, from the environment (the names the ``enkash-coins`` CLI reads):
``ENKASH_BASE_URL`` (the host EnKash gave you), ``ENKASH_COMPANY_ID``, and either
``ENKASH_TOKEN`` or ``ENKASH_USERNAME``, ``ENKASH_PASSWORD``, ``ENKASH_CLIENT_ID``,
``ENKASH_CLIENT_SECRET`` (plus ``ENKASH_TOKEN_URL`` for a separate token host);
``ORDER_EVENT`` (default ``ORDER_PAID``); ``ORDER_SERVICE_HOST`` / ``ORDER_SERVICE_PORT``
(default 127.0.0.1:8081).

Try it against the fake EnKash (no real coins), from the repository root::

    enkash-coins serve --port 8080 --seed examples/fake_seed.toml      # terminal 1

    export ENKASH_BASE_URL=http://127.0.0.1:8080 ENKASH_COMPANY_ID=C1 \\
           ENKASH_USERNAME=demo-user ENKASH_PASSWORD=demo-password \\
           ENKASH_CLIENT_ID=demo-client ENKASH_CLIENT_SECRET=demo-secret
    python examples/order_service.py                                    # terminal 2

    curl -X POST http://127.0.0.1:8081/orders/A1001/paid \\
         -H 'Content-Type: application/json' -d '{"user_id": "EKQZVMQK"}'   # run it twice
    curl http://127.0.0.1:8080/_fake/ledger                             # one credit of 50

To see an unknown outcome, make the fake apply every credit and then drop the
connection, call the webhook (503 "unknown": the credit landed, the answer was lost),
clear the faults and call again (200, and still one credit)::

    curl -X PUT http://127.0.0.1:8080/_fake/faults -d 'drop_after=1,routes=allocate'
    curl -X POST http://127.0.0.1:8081/orders/A1002/paid -d '{"user_id": "EKQZVMQK"}'
    curl -X PUT http://127.0.0.1:8080/_fake/faults -d ''
    curl -X POST http://127.0.0.1:8081/orders/A1002/paid -d '{"user_id": "EKQZVMQK"}'
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from enkash_coins import (
    AiohttpTransport,
    APIError,
    Auth,
    AuthenticationError,
    CoinAllocator,
    EnKashError,
    HTTPStatusError,
    InvalidInputError,
    InvalidRequestError,
    NotFoundError,
    PasswordGrant,
    PermissionDeniedError,
    RetryPolicy,
    StaticToken,
    TokenError,
    derive_request_id,
)

log = logging.getLogger("order_service")

COINS = web.AppKey("coins", CoinAllocator)
EVENT = web.AppKey("event", str)
#: Namespace of the requestIds: one credit per order for this award. A second award per
#: order (say, a first-order bonus) needs its own namespace.
AWARD = "ORDER_PAID"
#: Seconds a caller should wait before calling again, when EnKash gave no Retry-After.
RETRY_LATER = 30


class ConfigError(Exception):
    """The environment does not say how to reach EnKash."""


def allocator_from_env(env: Mapping[str, str]) -> CoinAllocator:
    """A CoinAllocator configured from ``ENKASH_*`` variables; nothing is opened yet."""

    def need(name: str, hint: str = "") -> str:
        value = env.get(name)
        if not value:
            raise ConfigError(f"set {name}{hint}")
        return value

    base_url = need("ENKASH_BASE_URL", " to the host EnKash gave you")
    auth: Auth
    if env.get("ENKASH_TOKEN"):
        auth = StaticToken(env["ENKASH_TOKEN"])
    else:
        # After a refused password PasswordGrant stops asking (EnKash locks an account after
        # three refusals): every call then answers 503 until you fix the credentials and restart.
        auth = PasswordGrant(
            username=need("ENKASH_USERNAME", " (or ENKASH_TOKEN)"), password=need("ENKASH_PASSWORD"),
            client_id=need("ENKASH_CLIENT_ID"), client_secret=need("ENKASH_CLIENT_SECRET"),
            token_url=env.get("ENKASH_TOKEN_URL") or None,
        )
    # Keep a webhook's answer well inside the caller's own timeout: 5 s per attempt, and
    # no new attempt after 10 s.
    return CoinAllocator(AiohttpTransport(base_url, timeout=5.0), auth=auth,
                         company_id=need("ENKASH_COMPANY_ID"), retry=RetryPolicy(max_time=10.0))


def create_app(coins: CoinAllocator | None = None, *, event: str | None = None,
               env: Mapping[str, str] = os.environ) -> web.Application:
    """The order service.

    Without ``coins`` the app builds its allocator from ``env`` on startup and closes it
    on cleanup. A given allocator (in tests: the pytest plugin's ``enkash_coins``) is
    used as is, and closed by whoever made it.
    """
    app = web.Application()
    app[EVENT] = event or env.get("ORDER_EVENT") or "ORDER_PAID"
    if coins is not None:
        app[COINS] = coins
    else:
        async def coin_allocator(app: web.Application) -> AsyncIterator[None]:
            async with allocator_from_env(env) as allocator:  # closed when the app shuts down
                app[COINS] = allocator
                yield

        app.cleanup_ctx.append(coin_allocator)
    app.router.add_post("/orders/{order_id}/paid", order_paid)
    return app


async def order_paid(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    user_id = body.get("user_id") if isinstance(body, dict) else None
    if not isinstance(user_id, str):
        return answer(400, "invalid", order_id, detail='the body must be JSON: {"user_id": "..."}')

    # Derived from the order alone: every call for this order sends the same requestId,
    # so EnKash credits it at most once, whichever call (or retry) gets through.
    request_id = derive_request_id(AWARD, order_id)
    try:
        allocation = await request.app[COINS].allocate(
            user_id=user_id, event=request.app[EVENT], request_id=request_id)
    except EnKashError as error:
        return error_answer(order_id, request_id, error)
    log.info("order %s: credited user %s (requestId %s)", order_id, user_id, request_id)
    return answer(200, "credited", order_id, request_id=allocation.request_id)


def error_answer(order_id: str, request_id: str, error: EnKashError) -> web.Response:
    """The HTTP answer for an allocation that raised ``error``."""
    if error.outcome_unknown:
        # It may have been credited. Never "failed": the caller's retry replays the same
        # requestId, which settles it without crediting twice.
        log.warning("order %s: outcome unknown, awaiting the caller's retry: %s", order_id, error)
        return answer(503, "unknown", order_id, request_id=request_id, detail=str(error),
                      retry_after=retry_after(error))
    if isinstance(error, InvalidInputError):  # e.g. a user_id with a space; nothing was sent
        return answer(400, "invalid", order_id, detail=error.message)
    if isinstance(error, (APIError, InvalidRequestError, NotFoundError)):
        # EnKash itself refused it: not applied, and the same request would be refused again
        # (e.g. the event is not configured, or this order was credited to another user).
        log.error("order %s: EnKash refused the credit: %s", order_id, error)
        return answer(422, "refused", order_id, request_id=request_id, detail=str(error))
    # Not applied, and worth trying again later: EnKash unreachable or rate limited, or our
    # credentials refused (then a person must act; the caller's retries wait meanwhile).
    level = logging.ERROR if isinstance(error, (AuthenticationError, PermissionDeniedError, TokenError)) \
        else logging.WARNING
    log.log(level, "order %s: not credited, awaiting the caller's retry: %s", order_id, error)
    return answer(503, "not_credited", order_id, request_id=request_id, detail=str(error),
                  retry_after=retry_after(error))


def retry_after(error: EnKashError) -> int:
    if isinstance(error, HTTPStatusError) and error.retry_after:
        return max(1, math.ceil(error.retry_after))
    return RETRY_LATER


def answer(status: int, outcome: str, order_id: str, *, request_id: str | None = None, detail: str | None = None,
           retry_after: int | None = None) -> web.Response:
    body = {"status": outcome, "order_id": order_id, "request_id": request_id, "detail": detail}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({k: v for k, v in body.items() if v is not None}, status=status, headers=headers)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = os.environ.get("ORDER_SERVICE_HOST", "127.0.0.1")
    port = int(os.environ.get("ORDER_SERVICE_PORT", "8081"))
    try:
        web.run_app(create_app(), host=host, port=port)
    except (ConfigError, InvalidInputError) as error:  # InvalidInputError: e.g. http:// to a remote host
        sys.exit(f"order_service: {error}")


if __name__ == "__main__":
    main()
