"""The preflight (issue 11): a request's input counted exactly with `count_tokens` before it is admitted.

Driven through the real SDK: a scripted transport shows what goes out (the count's URL, headers and body), the
emulator shows that the count agrees with what is billed, and pytester runs show the option and the report.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_bound import emulator_request

from pytest_costguard import BudgetExceededError, CostGuard, GuardConfig, InMemoryLedger, PriceBook
from pytest_costguard.core.budget import bound_request
from pytest_costguard.emulator import Emulator
from pytest_costguard.metering.guard import LOOSE_MARGIN, PreflightMode
from pytest_costguard.providers.anthropic.middleware import middleware_for

MODEL = "claude-haiku-4-5"
PNG_HEADER = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR"


def png(width: int, height: int) -> str:
    header = PNG_HEADER + width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return base64.b64encode(header + b"\x08\x02\0\0\0").decode()


def image_request(**extra: Any) -> dict[str, Any]:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(64, 64)}}
    content = [image, {"type": "text", "text": "what is it?"}]
    return {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": content}], **extra}


TEXT_REQUEST = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "x" * 400}]}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 60, "output_tokens": 5},
}


class Scripted:
    """A transport that answers `count_tokens` with `count` (a number, a status, or an exception) and the rest
    with `reply` (default `MESSAGE`), keeping every request it saw."""

    def __init__(self, count: int | httpx2.Response | Exception = 60, reply: dict[str, Any] | None = None) -> None:
        self.count = count
        self.reply = MESSAGE if reply is None else reply
        self.seen: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        if request.url.path.endswith("/count_tokens"):
            if isinstance(self.count, Exception):
                raise self.count
            if isinstance(self.count, httpx2.Response):
                return self.count
            return httpx2.Response(200, json={"input_tokens": self.count})
        return httpx2.Response(200, json=self.reply)

    @property
    def counts(self) -> list[httpx2.Request]:
        return [r for r in self.seen if r.url.path.endswith("/count_tokens")]

    @property
    def messages(self) -> list[httpx2.Request]:
        return [r for r in self.seen if not r.url.path.endswith("/count_tokens")]


def guard(limit: str | None = "1", mode: PreflightMode = "auto") -> CostGuard:
    return CostGuard(GuardConfig(preflight=mode), InMemoryLedger(limit=None if limit is None else Decimal(limit)))


def client(api: Scripted, metering: CostGuard, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-secret",
        base_url="https://gateway.example/anthropic",
        http_client=httpx2.Client(transport=httpx2.MockTransport(api)),
        middleware=[middleware_for(metering)],
        **kwargs,
    )


def local_worst(request: dict[str, Any]) -> Decimal:
    return bound_request(request, PriceBook().rates(MODEL)).cost


def counted_worst(request: dict[str, Any], tokens: int) -> Decimal:
    return bound_request(request, PriceBook().rates(MODEL), counted=tokens).cost


def tight(request: dict[str, Any]) -> str:
    """A budget `request`'s local bound fits twice, not `LOOSE_MARGIN` times: `auto` counts a loose bound in it."""
    return str(local_worst(request) * 2)


IMAGE_BUDGET = tight(image_request())


# -- the bound ------------------------------------------------------------------------------------------------


def test_a_count_replaces_only_the_input_part_of_the_bound() -> None:
    rates = PriceBook().rates(MODEL)
    request = image_request(max_tokens=1000)
    counted = bound_request(request, rates, counted=100)
    assert counted.input_tokens == 100
    assert counted.cost == (100 * rates.input.at(100) + 1000 * rates.output.at(100)) / Decimal(1_000_000)
    assert counted.cost < bound_request(request, rates).cost  # the image's 1,600-token allowance is gone
    # A cache breakpoint still prices the counted input at the write rate.
    cached = {**request, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}
    assert bound_request(cached, rates, counted=100).cost == (
        100 * rates.cache_write_1h.at(100) + 1000 * rates.output.at(100)
    ) / Decimal(1_000_000)


def test_what_server_tools_may_fetch_after_sending_stays_on_top_of_the_count() -> None:
    rates = PriceBook().rates(MODEL)
    fetch = {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2, "max_content_tokens": 5_000}
    request = {**TEXT_REQUEST, "tools": [fetch]}
    local = bound_request(request, rates)
    assert local.loose and local.fetched_tokens == 10_000
    counted = bound_request(request, rates, counted=700)
    assert counted.input_tokens == 10_700
    assert "what its server tools may read after sending: up to 10,000 tokens" in counted.notes


def test_plain_text_is_not_loose_and_media_tools_and_documents_are() -> None:
    rates = PriceBook().rates(MODEL)
    assert not bound_request(TEXT_REQUEST, rates).loose
    assert bound_request(image_request(), rates).loose
    tool = {"name": "lookup", "input_schema": {"type": "object"}}
    assert bound_request({**TEXT_REQUEST, "tools": [tool]}, rates).loose
    doc = {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
    assert bound_request({**TEXT_REQUEST, "messages": [{"role": "user", "content": [doc]}]}, rates).loose


# -- when a count is asked for --------------------------------------------------------------------------------


def test_auto_counts_media_and_tools_but_not_plain_text_that_fits() -> None:
    metering = guard(IMAGE_BUDGET)
    assert metering.plan(image_request()).preflight
    assert not metering.plan(TEXT_REQUEST).preflight
    tool = {"name": "lookup", "input_schema": {"type": "object"}}
    with_tools = {**TEXT_REQUEST, "tools": [tool]}
    assert guard(tight(with_tools)).plan(with_tools).preflight


def test_auto_does_not_count_a_loose_bound_that_fits_its_margin_over() -> None:
    request = image_request()
    worst = local_worst(request)
    assert not guard(str(worst * LOOSE_MARGIN)).plan(request).preflight  # the code under test sees no count
    assert guard(str(worst * LOOSE_MARGIN - Decimal("0.000001"))).plan(request).preflight
    api = Scripted()
    client(api, guard("1")).messages.create(**request)
    assert api.counts == [] and len(api.messages) == 1
    # The smallest budget on the way out decides: an outer run with little left still asks for the count.
    assert nested(str(worst * 2)).plan(request).preflight
    assert not nested("1").plan(request).preflight


def test_auto_counts_plain_text_whose_byte_bound_does_not_fit_what_is_left() -> None:
    worst = local_worst(TEXT_REQUEST)
    floor = counted_worst(TEXT_REQUEST, 0)
    assert guard(str(worst - Decimal("0.000001")), "auto").plan(TEXT_REQUEST).preflight
    # When even no input at all would not fit (max_tokens alone), counting cannot help: it is not asked for.
    assert not guard(str(floor - Decimal("0.000001")), "auto").plan(TEXT_REQUEST).preflight


def test_always_counts_every_call_and_off_none() -> None:
    assert guard("1", "always").plan(TEXT_REQUEST).preflight
    assert not guard("1", "off").plan(image_request()).preflight


def test_without_a_budget_nothing_is_counted_whatever_the_mode() -> None:
    for mode in ("auto", "always"):
        metering = guard(None, mode)  # type: ignore[arg-type]
        api = Scripted()
        client(api, metering).messages.create(**image_request())
        assert api.counts == [] and metering.preflight_calls == 0


def test_a_ledger_that_cannot_be_read_asks_for_no_count_and_leaves_the_verdict_to_the_reservation() -> None:
    class Unreachable(InMemoryLedger):
        @property
        def remaining(self) -> Decimal | None:
            raise ConnectionError("the shared ledger cannot be reached")

    metering = CostGuard(GuardConfig(), Unreachable(limit=Decimal(1)))
    assert not metering.plan(image_request()).preflight
    assert not metering.plan(TEXT_REQUEST).preflight


def nested(outer_limit: str, mode: PreflightMode = "auto") -> CostGuard:
    """An inner run's guard without a budget of its own, inside an outer run with a budget (as the plugin nests)."""
    inner = guard(None, mode)
    inner.parent = guard(outer_limit)
    return inner


def test_an_inner_run_without_a_budget_counts_as_the_outer_budget_requires() -> None:
    assert guard(None).plan(image_request()).preflight is False  # alone, nothing is counted
    assert nested(IMAGE_BUDGET).plan(image_request()).preflight
    assert not nested("1").plan(TEXT_REQUEST).preflight  # a text bound that fits the outer budget
    worst, floor = local_worst(TEXT_REQUEST), counted_worst(TEXT_REQUEST, 0)
    assert nested(str(worst - Decimal("0.000001"))).plan(TEXT_REQUEST).preflight
    assert not nested(str(floor - Decimal("0.000001"))).plan(TEXT_REQUEST).preflight
    assert not nested("1", "off").plan(image_request()).preflight
    # Two levels out: the outermost budget still decides.
    innermost = guard(None)
    innermost.parent = nested(IMAGE_BUDGET)
    assert innermost.plan(image_request()).preflight


def test_an_inner_runs_count_lets_in_what_the_outer_budget_would_refuse_on_the_local_bound() -> None:
    request = image_request(max_tokens=1000)
    budget = (local_worst(request) + counted_worst(request, 60)) / 2
    inner = nested(str(budget))
    api = Scripted(count=60)
    client(api, inner).messages.create(**request)
    assert len(api.counts) == 1 and len(api.messages) == 1 and inner.preflight_calls == 1

    off = nested(str(budget), "off")
    refused = Scripted(count=60)
    with pytest.raises(BudgetExceededError):
        client(refused, off).messages.create(**request)
    assert refused.seen == []


# -- through the SDK --------------------------------------------------------------------------------------------


def test_the_count_goes_through_the_callers_client_with_its_url_headers_and_auth() -> None:
    metering = guard(IMAGE_BUDGET)
    api = Scripted(count=60)
    sdk = client(api, metering, default_headers={"x-team": "costguard"})
    message = sdk.messages.create(**image_request(stop_sequences=["END"]))
    assert message.content[0].text == "ok"  # type: ignore[union-attr]
    [counted] = api.counts
    assert str(counted.url) == "https://gateway.example/anthropic/v1/messages/count_tokens"
    assert counted.headers["authorization"] == api.messages[0].headers["authorization"] == "Bearer sk-ant-secret"
    assert counted.headers["x-team"] == "costguard"
    body = json.loads(counted.content)
    # Only the fields count_tokens takes: max_tokens and stop_sequences would be rejected by the API.
    assert set(body) == {"model", "messages"}
    assert body["messages"] == image_request()["messages"]
    assert len(api.messages) == 1
    [record] = metering.records
    assert record.reserved_usd == counted_worst(image_request(), 60) < local_worst(image_request())
    assert (metering.preflight_calls, metering.preflight_failed) == (1, 0)


def test_a_beta_call_is_counted_with_its_beta_headers_and_query() -> None:
    metering = guard(IMAGE_BUDGET)
    api = Scripted()
    client(api, metering).beta.messages.create(
        **image_request(), betas=["files-api-2025-04-14"], extra_query={"beta": "true"}
    )
    [counted] = api.counts
    [sent] = api.messages
    assert counted.url.path == sent.url.path + "/count_tokens"
    assert counted.url.params == sent.url.params and counted.url.params.get("beta") == "true"
    assert counted.headers["anthropic-beta"] == sent.headers["anthropic-beta"] == "files-api-2025-04-14"


@pytest.mark.parametrize(
    "failure",
    [
        httpx2.Response(429, json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        httpx2.Response(500, json={"type": "error", "error": {"type": "api_error", "message": "boom"}}),
        httpx2.Response(200, json={"unexpected": True}),
        httpx2.Response(200, content=b"not json"),
        httpx2.ConnectError("refused"),
    ],
    ids=["429", "500", "no-count", "not-json", "no-connection"],
)
def test_a_failed_count_falls_back_to_the_local_bound_and_is_never_retried(failure: Any) -> None:
    metering = guard(IMAGE_BUDGET)
    api = Scripted(count=failure)
    sdk = client(api, metering, max_retries=2)
    assert sdk.messages.create(**image_request()).content[0].text == "ok"  # type: ignore[union-attr]
    assert len(api.counts) == 1  # one attempt: the SDK's retries never see it
    assert len(api.messages) == 1
    [record] = metering.records
    assert record.retries == 0
    assert record.reserved_usd == local_worst(image_request())
    assert (metering.preflight_calls, metering.preflight_failed) == (1, 1)
    assert metering.failed_attempts == 0


def test_the_count_lets_in_a_call_the_local_bound_would_refuse() -> None:
    request = image_request()
    budget = (counted_worst(request, 60) + local_worst(request)) / 2
    api = Scripted(count=60)
    client(api, guard(str(budget), "auto")).messages.create(**request)
    assert len(api.messages) == 1
    off = Scripted(count=60)
    with pytest.raises(BudgetExceededError, match="the per-image maximum"):
        client(off, guard(str(budget), "off")).messages.create(**request)
    assert off.seen == []


def test_a_call_refused_after_its_count_says_it_was_counted_and_is_not_sent() -> None:
    request = image_request()
    budget = counted_worst(request, 60) - Decimal("0.000001")
    metering = guard(str(budget))
    api = Scripted(count=60)
    with pytest.raises(BudgetExceededError, match="counted exactly before sending: 60 tokens"):
        client(api, metering).messages.create(**request)
    assert len(api.counts) == 1 and api.messages == []
    assert metering.preflight_calls == 1 and len(metering.refusals) == 1


def test_a_failed_count_is_named_in_the_refusal() -> None:
    request = image_request()
    metering = guard(str(counted_worst(request, 60)))
    api = Scripted(count=httpx2.Response(503, json={"type": "error", "error": {"type": "api_error", "message": "x"}}))
    with pytest.raises(BudgetExceededError, match=r"the exact count before sending failed \(HTTP 503\)"):
        client(api, metering, max_retries=0).messages.create(**request)
    assert api.messages == []


def test_the_async_client_counts_too() -> None:
    metering = guard(IMAGE_BUDGET)
    api = Scripted(count=60)

    async def main() -> Any:
        sdk = anthropic.AsyncAnthropic(
            api_key="k",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(api)),
            middleware=[middleware_for(metering)],
        )
        return await sdk.messages.create(**image_request())

    assert asyncio.run(main()).content[0].text == "ok"
    assert len(api.counts) == 1 and len(api.messages) == 1
    assert metering.records[0].reserved_usd == counted_worst(image_request(), 60)


def test_a_stream_is_counted_and_still_streams_to_the_caller() -> None:
    metering = guard(IMAGE_BUDGET)
    api = Scripted(count=60)

    def stream_handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/count_tokens"):
            return api(request)
        api.seen.append(request)
        start = {**MESSAGE, "content": [], "stop_reason": None, "usage": {"input_tokens": 60, "output_tokens": 1}}
        events = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        body = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    sdk = anthropic.Anthropic(
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(stream_handler)),
        middleware=[middleware_for(metering)],
    )
    with sdk.messages.stream(**image_request()) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 5
    assert len(api.counts) == 1 and len(api.messages) == 1
    assert json.loads(api.counts[0].content).get("stream") is None
    assert metering.records[0].output_tokens == 5


def test_a_respx_mock_of_only_the_messages_route_still_works_and_sees_one_call() -> None:
    import respx

    metering = guard(IMAGE_BUDGET)
    with respx.mock(base_url="https://api.anthropic.com", assert_all_called=True) as mock:
        route = mock.post("/v1/messages").mock(return_value=httpx2.Response(200, json=MESSAGE))
        sdk = anthropic.Anthropic(api_key="k", middleware=[middleware_for(metering)], max_retries=0)
        sdk.messages.create(**image_request())
    # The count went to an unmocked route (respx refused it): the call fell back to its local bound.
    assert route.call_count == 1
    assert (metering.preflight_calls, metering.preflight_failed) == (1, 1)
    assert metering.records[0].reserved_usd == local_worst(image_request())


# -- against the emulator: the count is what is billed ------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def _pdf(pages: int) -> str:
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode()]
    objects += [b"<< /Type /Page /Parent 2 0 R >>" for _ in range(pages)]
    body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj\n%s\nendobj\n" % (i + 1, o) for i, o in enumerate(objects))
    return base64.b64encode(body + b"%%EOF").decode()


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(800, 600)}}],
        [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": _pdf(5)}}],
        [{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf#pages=3"}}],
    ],
    ids=["image", "pdf", "pdf-by-url"],
)
def test_on_the_emulator_the_counted_input_is_the_billed_input_and_the_count_is_not_billed(
    emulator: Emulator, content: list[dict[str, Any]]
) -> None:
    emulator.reset()
    request = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [*content, {"type": "text", "text": "summarise"}]}],
    }
    metering = guard(tight(request))
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="k", middleware=[middleware_for(metering)]) as sdk:
        message = sdk.messages.create(**request)
        exact = sdk.messages.count_tokens(model=MODEL, messages=request["messages"]).input_tokens
    assert len(emulator.billed) == 1  # the preflight and the explicit count are free
    assert message.usage.input_tokens == exact
    [record] = metering.records
    assert record.reserved_usd == counted_worst(request, exact)
    assert metering.preflight_calls == 1


# -- the plugin ---------------------------------------------------------------------------------------------------

SUITE = """
from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 40, "output_tokens": 5})
TOOL = {"name": "lookup", "input_schema": {"type": "object"}}

def test_tools():
    API.client().messages.create(model="claude-haiku-4-5", max_tokens=10, tools=[TOOL],
                                 messages=[{"role": "user", "content": "x" * 100}])
    assert len(API.requests) == 1  # the count is not a Messages call
"""


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    pytester.makepyfile(test_suite=SUITE)
    # $0.005: the tool call's local bound ($0.0013) fits, but not LOOSE_MARGIN times, so `auto` counts it.
    result = pytester.runpytest("--llm-budget=0.005", "--llm-report=r.json", *args)
    return result, json.loads((pytester.path / "r.json").read_text())


def test_the_report_counts_the_preflights(fake_pytester: pytest.Pytester) -> None:
    result, report = _run(fake_pytester)
    result.assert_outcomes(passed=1)
    assert (report["preflight_calls"], report["preflight_failed"]) == (1, 0)
    result.stdout.fnmatch_lines(["preflight counts (count_tokens: free, rate-limited): 1"])


@pytest.mark.parametrize("how", ["cli", "ini"])
def test_preflight_off_restores_the_local_bound(fake_pytester: pytest.Pytester, how: str) -> None:
    if how == "ini":
        fake_pytester.makeini("[pytest]\nllm_preflight = off\n")
    result, report = _run(fake_pytester, *(["--llm-preflight=off"] if how == "cli" else []))
    result.assert_outcomes(passed=1)
    assert report["preflight_calls"] == 0
    assert "preflight counts" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "ini", "source"),
    [(["--llm-preflight=sometimes"], None, "--llm-preflight"), ([], "llm_preflight = sometimes", "llm_preflight in")],
)
def test_a_bad_preflight_mode_is_a_usage_error_naming_the_option(
    fake_pytester: pytest.Pytester, args: list[str], ini: str | None, source: str
) -> None:
    if ini:
        fake_pytester.makeini(f"[pytest]\n{ini}\n")
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{source}*'sometimes' is not one of auto, always, off*"])


# -- utilization: a media-heavy suite spends most of its budget before its first refusal --------------------------


def test_with_the_default_preflight_a_media_heavy_suite_uses_more_of_its_budget_and_never_more_than_it() -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "utilization.py"
    spec = importlib.util.spec_from_file_location("costguard_utilization", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    budget = Decimal("0.10")
    auto, off = module.measure("auto", budget), module.measure("off", budget)
    for run in (auto, off):
        assert run.billed <= budget
        assert run.recorded == run.billed  # the report equals what was billed
    assert auto.preflights > 0 and off.preflights == 0
    assert auto.share > off.share
    assert auto.calls > off.calls


# -- the property: a bound built on the emulator's count is never below what the emulator bills -------------------


@settings(max_examples=150, deadline=None)
@given(emulator_request(), st.data())
def test_the_counted_bound_is_never_below_what_the_emulator_bills(
    pair: tuple[dict[str, Any], dict[str, bytes]], data: st.DataObject
) -> None:
    from pytest_costguard.core.pricing import Usage
    from pytest_costguard.emulator.errors import ApiError
    from pytest_costguard.emulator.replies import last_user_text
    from pytest_costguard.emulator.tokens import segments
    from pytest_costguard.emulator.tools import server_tool_use
    from pytest_costguard.emulator.validation import validate_request

    request, files = pair
    try:
        validate_request(request)
        counted = sum(segment.tokens for segment in segments(request, files))  # what count_tokens answers
    except ApiError:
        assume(False)
    server = server_tool_use(request, last_user_text(request))
    usage = Usage(
        input_tokens=counted + (server.tokens if server is not None else 0),
        output_tokens=data.draw(st.integers(0, request["max_tokens"])),
        web_search_requests=server.web_search_requests if server is not None else 0,
    )
    book = PriceBook()
    rates = book.rates(request["model"])
    bound = bound_request(request, rates, model=request["model"], counted=counted)
    assert bound.cost >= book.cost(usage, request["model"])
    assert bound.cost <= bound_request(request, rates, model=request["model"], counted=counted + 1).cost
