"""OpenTelemetry: one span per logical call, attempts as events, four instruments; nothing when unconfigured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import APIError, CoinAllocator, Request, Response, StaticToken, TransportError, _telemetry

_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module")
def providers() -> None:
    """The OpenTelemetry SDK with in-memory exporters, set once for the process (as an application would)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    _telemetry._recheck = 0.0  # the SDK looks again at most once a second; this process set them just now


@pytest.fixture
def spans(providers: None) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER


def points(name: str) -> list[Any]:
    data = _READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def total(name: str, **labels: str) -> float:
    return sum(p.value for p in points(name)
               if all(p.attributes.get(f"enkash.{k}") == v for k, v in labels.items()))


class Traced(ScriptedTransport):
    """Records the span that is current while each request is sent."""

    def __init__(self, *script: Any) -> None:
        super().__init__(*script)
        self.current: list[int] = []

    async def send(self, request: Request) -> Response:
        self.current.append(trace.get_current_span().get_span_context().span_id)
        return await super().send(request)


async def test_a_call_that_retried_three_times_is_one_span(spans: InMemorySpanExporter) -> None:
    before = total("enkash_coins.retries", operation="allocate")
    transport = Traced(Response(503, {}, b""), Response(502, {}, b""), TransportError("reset"), envelope())
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    await coins.allocate(user_id="U", event="E", request_id="OTEL_1")
    [span] = spans.get_finished_spans()
    assert span.name == "enkash_coins.allocate" and span.kind is trace.SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes == {"enkash.operation": "allocate", "enkash.request_id": "OTEL_1", "enkash.attempts": 4,
                          "enkash.outcome": "succeeded", "http.response.status_code": 200}
    events = [dict(e.attributes or {}) for e in span.events]
    assert [e["enkash.attempt"] for e in events] == [1, 2, 3]
    assert [e.get("http.response.status_code") for e in events] == [503, 502, None]
    assert [e["error.type"] for e in events] == ["ServerError", "ServerError", "TransportError"]
    assert all("enkash.wait" in e for e in events)
    # Every attempt was sent inside the call's span: an instrumented HTTP client's spans nest under it.
    assert set(transport.current) == {span.get_span_context().span_id}
    assert total("enkash_coins.retries", operation="allocate") - before == 3


async def test_failed_and_unknown_outcomes(spans: InMemorySpanExporter) -> None:
    refused = CoinAllocator(ScriptedTransport(envelope(1, "Insufficient balance")), auth=StaticToken("t"),
                            company_id=COMPANY, retry=FAST)
    with pytest.raises(APIError):
        await refused.allocate(user_id="U", event="E")
    lost = CoinAllocator(ScriptedTransport(TransportError("reset")), auth=StaticToken("t"), company_id=COMPANY,
                         retry=FAST)
    with pytest.raises(TransportError):
        await lost.allocate(user_id="U", event="E")
    first, second = spans.get_finished_spans()
    assert (first.attributes or {})["enkash.outcome"] == "failed"
    assert (first.attributes or {})["error.type"] == "APIError"
    assert not first.status.is_ok
    assert (second.attributes or {})["enkash.outcome"] == "unknown"
    assert (second.attributes or {})["enkash.attempts"] == 4


async def test_the_four_instruments(spans: InMemorySpanExporter) -> None:
    before = total("enkash_coins.calls", operation="get_balance", outcome="succeeded")
    coins = CoinAllocator(ScriptedTransport(envelope(payload=7)), auth=StaticToken("t"), company_id=COMPANY)
    for _ in range(3):
        assert await coins.get_balance(user_id="U") == 7
    assert total("enkash_coins.calls", operation="get_balance", outcome="succeeded") - before == 3
    durations = [p for p in points("enkash_coins.call.duration")
                 if p.attributes.get("enkash.operation") == "get_balance"]
    assert durations and sum(p.count for p in durations) >= 3
    assert coins.retry_budget is not None
    assert coins.retry_budget.remaining in {p.value for p in points("enkash_coins.retry_budget.remaining")}


def test_nothing_configured_means_no_span_and_no_instrument() -> None:
    """Without an SDK provider the hook returns at once; the cost is measured in the benchmarks."""
    script = textwrap.dedent("""
        from enkash_coins import _telemetry
        from enkash_coins._retry import Call
        assert _telemetry.start(Call("allocate", "R", mutating=True, idempotent=True)) is None
        assert _telemetry._made is None
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
