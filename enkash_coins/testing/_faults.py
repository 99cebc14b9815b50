"""Fault injection for the fake EnKash, deterministic under a seed.

A request's fate is a pure function of (seed, the request's identity, its attempt
number), so a failing scenario reproduces however tasks interleave.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from .._checks import check_seconds, is_number
from .._exceptions import InvalidInputError
from .._routes import NAMES
from .._transports import Response

__all__ = ["KINDS", "Dropped", "Faults"]
#: Fault kinds, in the order their probabilities are stacked.
KINDS = ("rate_limit", "server_error", "bad_gateway", "unavailable", "hang",
         "drop_before", "drop_after", "gateway_400", "gateway_404", "forbidden")
#: What a ``plan`` step may name: a fault kind, or "ok" for an attempt answered normally.
PLAN_STEPS = frozenset({*KINDS, "ok"})


def _html(status: int, reason: str) -> bytes:
    return (f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1>"
            "</center><hr><center>nginx</center></body></html>").encode()


class Dropped(Exception):
    """The fake dropped the connection; ``applied`` says whether it acted first."""

    def __init__(self, applied: bool) -> None:
        super().__init__("connection dropped " + ("after" if applied else "before") + " applying")
        self.applied = applied


def _fraction(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not is_number(value) or not 0 <= value <= 1:
        raise InvalidInputError(f"{attribute.name} must be a fraction between 0 and 1, not {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value, zero=True)


def _routes(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, frozenset) and value <= NAMES):
        raise InvalidInputError(f"routes must be a subset of {sorted(NAMES)}, not {value!r}")


def _plan(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    unknown = [step for step in value if step not in PLAN_STEPS]
    if unknown:
        raise InvalidInputError(f"plan steps must be fault kinds or 'ok', not {unknown}; kinds: {sorted(KINDS)}")


def _to_routes(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else _items("routes", value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidInputError(f"routes must be route names, not {value!r}")
    return frozenset(items)


def _to_plan(value: Any) -> tuple[str, ...]:
    return tuple(_items("plan", [value] if isinstance(value, str) else value))


def _items(what: str, value: Any) -> list[Any]:
    try:
        return list(value)
    except TypeError:
        raise InvalidInputError(f"{what} must be a collection of names, not {type(value).__name__}") from None


@attrs.frozen(kw_only=True)
class Faults:
    """What fraction of requests fail, and how.

    Args:
        rate_limit: answered 429 with ``Retry-After: retry_after``.
        server_error: answered 500 with a JSON envelope.
        bad_gateway: answered 502 with an HTML page, as a gateway would.
        unavailable: answered 503 with ``Retry-After: retry_after``.
        hang: held for ``hang_seconds`` (past the client's timeout), then 504; not applied.
        drop_before: connection dropped before the request is applied.
        drop_after: applied, then the connection dropped: the client sees a failure
            while the ledger has the credit. This is the case that doubles money in
            an SDK without idempotent retries.
        gateway_400: an HTML 400 page from a gateway in front of EnKash (not an
            EnKash answer; not applied).
        gateway_404: the same, with an HTML 404 page.
        forbidden: 403 (not applied), as for credentials without the permission.
        plan: the fate of the first attempts of *every* request, in order, before the
            random draws take over: e.g. ``("drop_after", "gateway_404")`` applies and
            drops attempt 1, then answers attempt 2 with a gateway's 404 page. A step
            is a fault kind or ``"ok"``.
        latency: every request waits ``latency`` plus up to ``latency_jitter``
            seconds.
        latency_jitter: see ``latency``.
        routes: limit faults (not latency) to these routes (see ``_routes.NAMES``).
        seed: makes every fate reproducible.
    """

    rate_limit: float = attrs.field(default=0.0, validator=_fraction)
    server_error: float = attrs.field(default=0.0, validator=_fraction)
    bad_gateway: float = attrs.field(default=0.0, validator=_fraction)
    unavailable: float = attrs.field(default=0.0, validator=_fraction)
    hang: float = attrs.field(default=0.0, validator=_fraction)
    drop_before: float = attrs.field(default=0.0, validator=_fraction)
    drop_after: float = attrs.field(default=0.0, validator=_fraction)
    gateway_400: float = attrs.field(default=0.0, validator=_fraction)
    gateway_404: float = attrs.field(default=0.0, validator=_fraction)
    forbidden: float = attrs.field(default=0.0, validator=_fraction)
    plan: tuple[str, ...] = attrs.field(default=(), converter=_to_plan, validator=_plan)
    retry_after: float = attrs.field(default=0, validator=_seconds)
    hang_seconds: float = attrs.field(default=5.0, validator=_seconds)
    latency: float = attrs.field(default=0.0, validator=_seconds)
    latency_jitter: float = attrs.field(default=0.0, validator=_seconds)
    routes: frozenset[str] | None = attrs.field(default=None, converter=_to_routes, validator=_routes)
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if sum(getattr(self, kind) for kind in KINDS) > 1:
            raise InvalidInputError("fault fractions add up to more than 1")

    def _draw(self, key: Any, attempt: int, salt: str) -> float:
        digest = hashlib.blake2b(f"{self.seed}|{salt}|{key!r}|{attempt}".encode(),
                                 digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def pick(self, route: str, key: Any, attempt: int) -> str | None:
        """The fault for this attempt of this request, or None."""
        if self.routes is not None and route not in self.routes:
            return None
        if attempt <= len(self.plan):
            step = self.plan[attempt - 1]
            return None if step == "ok" else step
        draw = self._draw(key, attempt, "fault")
        for kind in KINDS:
            draw -= getattr(self, kind)
            if draw < 0:
                return kind
        return None

    def delay(self, key: Any, attempt: int) -> float:
        if not self.latency_jitter:
            return self.latency
        return self.latency + self.latency_jitter * self._draw(key, attempt, "latency")

    def response(self, kind: str) -> Response:
        """The canned answer of a status fault."""
        after = {"retry-after": str(int(self.retry_after))}
        if kind == "rate_limit":
            return _json(429, "Too many requests", after)
        if kind == "server_error":
            return _json(500, "Internal server error", {})
        if kind == "bad_gateway":
            return Response(502, {"content-type": "text/html"}, _html(502, "Bad Gateway"))
        if kind == "gateway_400":
            return Response(400, {"content-type": "text/html"}, _html(400, "Bad Request"))
        if kind == "gateway_404":
            return Response(404, {"content-type": "text/html"}, _html(404, "Not Found"))
        if kind == "forbidden":
            return Response(403, {"content-type": "application/json"},
                            b'{"error": "access_denied", "error_description": "Not allowed"}')
        if kind == "unavailable":
            return Response(503, {"content-type": "text/plain", **after}, b"Service Unavailable")
        return Response(504, {"content-type": "text/plain"}, b"Gateway Timeout")

    @classmethod
    def parse(cls, spec: str, **extra: Any) -> Faults:
        """Build from ``"server_error=0.1,drop_after=0.05,retry_after=1"`` (CLI syntax)."""
        values: dict[str, Any] = dict(extra)
        names = {a.name for a in attrs.fields(cls)}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, raw = item.partition("=")
            name = name.strip().replace("-", "_")
            if name not in names or not raw:
                raise InvalidInputError(f"unknown fault setting {item!r}; known: {sorted(names)}")
            try:
                if name == "routes":
                    values[name] = frozenset(raw.split("+"))
                elif name == "plan":
                    values[name] = tuple(raw.split("+"))
                elif name == "seed":
                    values[name] = int(raw)
                else:
                    values[name] = float(raw)
            except ValueError:
                raise InvalidInputError(f"fault setting {item!r}: {raw!r} is not a number") from None
        return cls(**values)


def _json(status: int, message: str, headers: dict[str, str]) -> Response:
    body = {"payload": message, "response_code": status, "response_message": message}
    return Response(status, {"content-type": "application/json", **headers}, json.dumps(body).encode())

