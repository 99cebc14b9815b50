"""The edges: strict decoding, deadlines, only SDK errors, callbacks that fail, constructor arguments."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    AuthenticationError,
    CoinAllocator,
    FakeEnKash,
    Faults,
    InMemoryTransport,
    InvalidInputError,
    PasswordGrant,
    Request,
    Response,
    ResponseDecodeError,
    RetryEvent,
    RetryPolicy,
    ServerError,
    StaticToken,
    TokenError,
    TransportError,
    WrongEventLoopError,
)

EVENT = {"coinConfigId": "WCC1", "configuration": "DEFAULT", "event": "E", "amount": 10}


@pytest.mark.parametrize("field, value", [
    ("event", None), ("event", 5), ("amount", 10.9), ("amount", True), ("amount", -5), ("amount", 0),
    ("amount", "10"), ("coinConfigId", ""), ("coinConfigId", ".."), ("coinConfigId", None),
    ("configuration", None), ("configuration", 1),
])
async def test_an_event_payload_is_decoded_strictly(field: str, value: object) -> None:
    coins = CoinAllocator(ScriptedTransport(envelope(payload={**EVENT, field: value})), auth=StaticToken("t"),
                          company_id=COMPANY, retry=FAST)
    with pytest.raises(ResponseDecodeError, match="event payload"):
        await coins.get_event("WCC1")


async def test_a_valid_event_payload_still_decodes_and_a_new_configuration_is_kept() -> None:
    coins = CoinAllocator(ScriptedTransport(envelope(payload={**EVENT, "configuration": "TIERED"})),
                          auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    event = await coins.get_event("WCC1")
    assert (event.amount, event.configuration.value) == (10, "TIERED")


@pytest.mark.parametrize("expires_in", ["NaN", "Infinity", "-1", "0", "true", '"300"'])
async def test_a_token_without_a_usable_lifetime_is_asked_for_once(expires_in: str) -> None:
    body = f'{{"access_token": "A", "expires_in": {expires_in}}}'.encode()
    transport = ScriptedTransport(Response(200, {}, body))
    coins = CoinAllocator(transport, auth=PasswordGrant(username="u", password="p", client_id="c",
                                                         client_secret="s"), company_id=COMPANY, retry=FAST)
    for _ in range(3):
        with pytest.raises(AuthenticationError, match=r"expires_in|not JSON"):
            await coins.get_balance(user_id="U")
    assert len(transport.sent) == 1  # latched: never a token request per call


@pytest.mark.parametrize("where", ["user_id", "company_id", "request_id", "coin_config_id"])
async def test_dot_and_dot_dot_are_not_ids(where: str) -> None:
    transport = ScriptedTransport(envelope())
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY)
    for bad in (".", ".."):
        with pytest.raises(InvalidInputError, match="not a usable id"):
            if where == "coin_config_id":
                await coins.get_event(bad)
            else:
                await coins.allocate(**{"user_id": "U", "event": "E", where: bad})  # type: ignore[arg-type]
    assert transport.sent == []


class SlowFailure(ScriptedTransport):
    """Each attempt takes ``seconds`` and answers 503; records when each attempt started."""

    def __init__(self, seconds: float) -> None:
        super().__init__(Response(503, {}, b""))
        self.seconds = seconds
        self.starts: list[float] = []

    async def send(self, request: Request) -> Response:
        self.starts.append(time.monotonic())
        await asyncio.sleep(self.seconds)
        return await super().send(request)


async def test_max_time_is_a_deadline_no_attempt_starts_after_it() -> None:
    transport = SlowFailure(0.4)
    policy = RetryPolicy(max_attempts=10, max_time=1.0, base_delay=0.0, budget=20, retry_cost=5)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=policy)
    started = time.monotonic()
    with pytest.raises(ServerError) as info:
        await coins.allocate(user_id="U", event="E")
    assert all(t - started < 1.0 + 0.05 for t in transport.starts)  # before: 0.0, 0.41, 0.81 and 1.21 s
    assert len(transport.starts) <= 3 and info.value.attempts == len(transport.starts)
    # Only the retries that ran were paid for: the one the deadline stopped took nothing.
    assert coins.retry_budget is not None and coins.retry_budget.remaining == 20 - 5 * (len(transport.starts) - 1)


async def test_a_wait_that_would_run_past_the_deadline_ends_the_call() -> None:
    events: list[RetryEvent] = []
    transport = ScriptedTransport(Response(503, {"retry-after": "2"}, b""), envelope())
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, on_retry=events.append,
                          retry=RetryPolicy(max_time=1.0, max_delay=5.0))
    with pytest.raises(ServerError):
        await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 1 and events == []


async def test_a_failing_on_retry_is_logged_once_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: RetryEvent) -> None:
        raise RuntimeError("metrics backend down")

    transport = ScriptedTransport(Response(503, {}, b""), Response(502, {}, b""), Response(500, {}, b""), envelope())
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST, on_retry=broken)
    with caplog.at_level(logging.ERROR, logger="enkash_coins"):
        allocation = await coins.allocate(user_id="U", event="E", request_id="CB_1")
    assert allocation.request_id == "CB_1" and len(transport.sent) == 4
    failures = [r for r in caplog.records if "on_retry callback failed" in r.getMessage()]
    assert len(failures) == 1 and "CB_1" in failures[0].getMessage()


def test_one_allocator_from_two_event_loops_is_a_clear_error() -> None:
    """The Django/Celery mistake: a module-level allocator used by two asyncio.run calls."""
    fake = FakeEnKash()
    fake.add_event("E", 1, company_id=COMPANY)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)
    asyncio.run(coins.allocate(user_id="U", event="E"))
    with pytest.raises(WrongEventLoopError, match=r"one allocator per event loop|SyncCoinAllocator"):
        asyncio.run(coins.allocate(user_id="U", event="E"))


async def test_a_custom_auth_provider_or_transport_that_breaks_raises_only_sdk_errors() -> None:
    class BrokenVault:
        async def get_token(self, transport: Any) -> str:
            raise KeyError("vault path")

        def invalidate(self, token: str) -> bool:
            return False

    class BrokenTransport(ScriptedTransport):
        async def send(self, request: Request) -> Response:
            raise OSError("socket gone")

    with pytest.raises(TokenError, match="BrokenVault failed: KeyError") as info:
        await CoinAllocator(ScriptedTransport(envelope()), auth=BrokenVault(), company_id=COMPANY,
                            retry=FAST).allocate(user_id="U", event="E")
    assert info.value.__cause__ is None and not info.value.sent
    with pytest.raises(TransportError, match="BrokenTransport failed: OSError") as caught:
        await CoinAllocator(BrokenTransport(), auth=StaticToken("t"), company_id=COMPANY,
                            retry=FAST).allocate(user_id="U", event="E")
    assert caught.value.outcome_unknown  # it may have left before the transport broke

    def factory() -> str:
        raise ZeroDivisionError

    with pytest.raises(InvalidInputError, match="request_id_factory failed"):
        await CoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY,
                            request_id_factory=factory).allocate(user_id="U", event="E")


# -- any constructor argument: a working object, or InvalidInputError -----------------------------

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
anything = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=5), st.lists(st.integers(), max_size=2),
    st.sampled_from([10**400, -0.0, 1e-300, "\x00", "a\nb", "https://x:99999", "..", object()]),
)


def built_or_refused(build: Any) -> object | None:
    try:
        return build()
    except InvalidInputError:
        return None


@SETTINGS
@given(name=st.sampled_from(["max_attempts", "max_time", "base_delay", "max_delay", "budget", "retry_cost",
                             "timeout_retry_cost"]), value=anything)
def test_any_retry_policy_argument(name: str, value: object) -> None:
    built_or_refused(lambda: RetryPolicy(**{name: value}))


@SETTINGS
@given(name=st.sampled_from(["username", "password", "client_id", "client_secret", "token_url",
                             "refresh_margin", "clock"]), value=anything)
def test_any_password_grant_argument(name: str, value: object) -> None:
    kwargs: dict[str, Any] = {"username": "u", "password": "p", "client_id": "c", "client_secret": "s", name: value}
    built_or_refused(lambda: PasswordGrant(**kwargs))


@SETTINGS
@given(value=anything)
def test_any_static_token(value: object) -> None:
    built_or_refused(lambda: StaticToken(value))  # type: ignore[arg-type]


@SETTINGS
@given(name=st.sampled_from(["company_id", "retry", "request_id_factory", "on_retry", "auth", "transport"]),
       value=anything)
def test_any_allocator_argument(name: str, value: object) -> None:
    kwargs: dict[str, Any] = {"transport": ScriptedTransport(envelope()), "auth": StaticToken("t"), name: value}
    transport = kwargs.pop("transport")
    built_or_refused(lambda: CoinAllocator(transport, **kwargs))


@SETTINGS
@given(name=st.sampled_from(["timeout", "fake"]), value=anything)
def test_any_in_memory_transport_argument(name: str, value: object) -> None:
    built_or_refused(lambda: InMemoryTransport(**{name: value}))


@SETTINGS
@given(name=st.sampled_from(["rate_limit", "server_error", "latency", "retry_after", "plan", "routes", "seed"]),
       value=anything)
def test_any_fault_setting(name: str, value: object) -> None:
    built_or_refused(lambda: Faults(**{name: value}))


@SETTINGS
@given(timeout=anything, headers=st.one_of(anything, st.dictionaries(st.text(max_size=8), st.text(max_size=8))))
def test_any_per_call_option(timeout: object, headers: object) -> None:
    coins = CoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    built_or_refused(lambda: coins.with_options(timeout=timeout, headers=headers))  # type: ignore[arg-type]


def test_events_json_is_unchanged_by_strict_decoding() -> None:
    assert json.loads(json.dumps(EVENT)) == EVENT
