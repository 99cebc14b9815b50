"""A transport that answers every request at once with a canned success: measures the SDK alone."""

from __future__ import annotations

from enkash_coins import Request, Response

SUCCESS = Response(200, {"content-type": "application/json"},
                   b'{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}')


class TrivialTransport:
    calls = 0

    async def send(self, request: Request) -> Response:
        self.calls += 1
        return SUCCESS

    async def aclose(self) -> None:
        pass
