"""Every error class comes from a real response shape, with the fields a caller needs."""

from __future__ import annotations

import pytest

from conftest import envelope, scripted
from enkash_coins import (
    APIError,
    AuthenticationError,
    HTTPStatusError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Response,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
)

ONCE = RetryPolicy(max_attempts=1)
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


async def test_business_failure_with_http_200() -> None:
    coins, _ = scripted(envelope(1, "Insufficient balance in card account", "Insufficient balance in card account"))
    with pytest.raises(APIError) as info:
        await coins.allocate(user_id="U", event="E", request_id="R1")
    err = info.value
    assert (err.response_code, err.http_status, err.request_id) == (1, 200, "R1")
    assert err.response_message == err.payload == "Insufficient balance in card account"
    assert "Insufficient balance" in str(err) and "R1" in str(err)


@pytest.mark.parametrize("status, cls", [
    (400, InvalidRequestError), (401, AuthenticationError), (403, PermissionDeniedError),
    (404, NotFoundError), (422, InvalidRequestError), (429, RateLimitError),
    (500, ServerError), (503, ServerError), (418, HTTPStatusError),
])
async def test_status_codes_map_to_classes(status: int, cls: type[HTTPStatusError]) -> None:
    coins, _ = scripted(envelope(1, "Validation failed", "bad", status=status), retry=ONCE)
    with pytest.raises(cls) as info:
        await coins.allocate(user_id="U", event="E", request_id="R2")
    err = info.value
    assert type(err) is cls
    assert err.http_status == status
    assert err.response_code == 1 and err.response_message == "Validation failed"
    assert err.request_id == "R2"
    assert f"HTTP {status}" in str(err)


async def test_html_gateway_error_is_a_server_error_not_a_decode_error() -> None:
    coins, _ = scripted(Response(502, {"content-type": "text/html"}, HTML_502), retry=ONCE)
    with pytest.raises(ServerError) as info:
        await coins.allocate(user_id="U", event="E", request_id="R3")
    assert info.value.response_code is None
    assert "502 Bad Gateway" in info.value.body
    assert info.value.retryable


@pytest.mark.parametrize("body", [
    b"<html>ok</html>", b"", b"[1, 2]", b'{"response_code": "0"}', b'{"payload": "x"}',
    b"\xff\xfe\xfa", b"[" * 100_000,
])
async def test_2xx_that_is_not_an_envelope_is_a_decode_error(body: bytes) -> None:
    coins, _ = scripted(Response(200, {}, body))
    with pytest.raises(ResponseDecodeError) as info:
        await coins.allocate(user_id="U", event="E", request_id="R4")
    err = info.value
    assert err.request_id == "R4"
    # The server may have applied it: say so, and how to recover.
    assert err.outcome_unknown and "replay it with the same requestId R4" in str(err)


async def test_decode_error_on_a_read_is_not_called_outcome_unknown() -> None:
    coins, _ = scripted(Response(200, {}, b"nope"))
    with pytest.raises(ResponseDecodeError) as info:
        await coins.get_balance(user_id="U")
    assert not info.value.outcome_unknown


async def test_balance_payload_of_the_wrong_type_is_a_decode_error() -> None:
    coins, _ = scripted(envelope(payload="lots"))
    with pytest.raises(ResponseDecodeError, match="expected an integer"):
        await coins.get_balance(user_id="U")
