"""Requests the middleware cannot read, retries below the SDK, and clients built before the patch (issue 12)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
import respx
from anthropic.types import Message

from pytest_costguard.core.budget import BudgetExceededError, UnboundedCallError, worst_case_cost
from pytest_costguard.core.pricing import PriceBook, Usage
from pytest_costguard.core.routing import RoutePolicy
from pytest_costguard.metering.guard import CostGuard, GuardConfig
from pytest_costguard.metering.ledger import InMemoryLedger
from pytest_costguard.providers.anthropic.middleware import middleware_for

API = "https://api.anthropic.com"
MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 12, "output_tokens": 7}
BODY = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}


def message(model: str = MODEL) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE,
    }


def metered(budget: str | None = None, **config: Any) -> tuple[CostGuard, anthropic.Anthropic]:
    guard = CostGuard(GuardConfig(**config), InMemoryLedger(limit=None if budget is None else Decimal(budget)))
    return guard, anthropic.Anthropic(api_key="sk-ant-test", middleware=[middleware_for(guard)], max_retries=0)


def sent_json(route: respx.Route) -> dict[str, Any]:
    return json.loads(route.calls.last.request.content)  # type: ignore[no-any-return]


# -- bodies and paths that can be read are metered -------------------------------------------------------------
def test_raw_json_content_bytes_are_metered_like_a_body(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{API}/v1/messages").respond(json=message())
    guard, client = metered("1")
    client.post("/v1/messages", content=json.dumps(BODY).encode(), cast_to=Message)
    assert route.call_count == 1
    assert sent_json(route) == BODY  # the caller's bytes, sent as they were
    [record] = guard.records
    assert record.model == MODEL and not record.unpriced and not record.estimated
    assert record.cost_usd == PriceBook().cost(Usage(input_tokens=12, output_tokens=7), MODEL)
    assert record.reserved_usd == worst_case_cost(BODY, PriceBook(), model=MODEL)


@pytest.mark.parametrize(
    "path",
    ["/v1/messages#fragment", "/v1/messages?beta=true", "/v1/./messages", "/v1//messages/", "/v1/%6Dessages"],
)
def test_a_fragment_query_or_odd_slashes_do_not_hide_a_messages_call(respx_mock: respx.MockRouter, path: str) -> None:
    route = respx_mock.route(method="POST", host="api.anthropic.com").respond(json=message())
    guard, client = metered("0")
    with pytest.raises(BudgetExceededError) as refused:
        client.post(path, body=BODY, cast_to=Message)
    assert not isinstance(refused.value, UnboundedCallError)  # priced and refused by the budget, not unread
    assert route.call_count == 0
    guard, client = metered()
    client.post(path, body=BODY, cast_to=Message)
    assert [r.model for r in guard.records] == [MODEL]


def test_a_routed_raw_content_call_sends_the_routed_body(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{API}/v1/messages").respond(json=message("claude-haiku-4-5"))
    guard, client = metered(route=RoutePolicy(mode="cheap"))
    opus = {**BODY, "model": "claude-opus-4-5"}
    client.post("/v1/messages", content=json.dumps(opus).encode(), cast_to=Message)
    assert sent_json(route)["model"] == "claude-haiku-4-5"
    assert [r.requested_model for r in guard.records] == ["claude-opus-4-5"]


def test_extra_body_is_metered_and_routing_is_not_undone_by_it(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{API}/v1/messages").respond(json=message())
    guard, client = metered(route=RoutePolicy(mode="cheap"))
    client.messages.create(**BODY, extra_body={"max_tokens": 4000, "model": "claude-opus-4-5"})  # type: ignore[call-overload]
    sent = sent_json(route)
    assert (sent["model"], sent["max_tokens"]) == ("claude-haiku-4-5", 4000)
    [record] = guard.records
    assert record.reserved_usd == worst_case_cost({**BODY, "max_tokens": 4000}, PriceBook(), model=MODEL)


# -- what cannot be read or priced --------------------------------------------------------------------------------
def _chunks() -> Iterator[bytes]:
    yield json.dumps(BODY).encode()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        pytest.param(_chunks, "stream", id="a generator"),
        pytest.param(lambda: b"model=claude-haiku-4-5", "not JSON", id="bytes that are not JSON"),
        pytest.param(lambda: b"[1, 2]", "not a JSON object", id="a JSON array"),
    ],
)
def test_an_unreadable_messages_body_is_refused_under_a_budget_before_sending(
    respx_mock: respx.MockRouter, content: Any, why: str
) -> None:
    route = respx_mock.post(f"{API}/v1/messages").respond(json=message())
    guard, client = metered("5")
    with pytest.raises(UnboundedCallError) as refused:
        client.post("/v1/messages", content=content(), cast_to=Message)
    assert route.call_count == 0
    assert "POST /v1/messages" in str(refused.value) and why in str(refused.value)
    assert [r.scope for r in guard.refusals] == ["session"]
    assert guard.ledger.spent == 0


def test_an_unknown_endpoint_is_refused_under_a_budget_naming_it_and_how_to_declare_it_free(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(f"{API}/v1/sessions/sesn_1/events").respond(json={"data": []})
    guard, client = metered("5")
    with pytest.raises(UnboundedCallError) as refused:
        client.post("/v1/sessions/sesn_1/events", body={"events": []}, cast_to=object)
    assert route.call_count == 0
    message_text = str(refused.value)
    assert "POST /v1/sessions/sesn_1/events" in message_text
    assert "llm_free_endpoints = /v1/sessions/sesn_1/events" in message_text
    assert "--llm-free-endpoint=" in message_text
    assert guard.refusals[0].message == message_text


def test_a_test_budget_alone_refuses_an_unknown_endpoint_too(respx_mock: respx.MockRouter) -> None:
    from pytest_costguard.metering.scope import Scope, running

    route = respx_mock.post(f"{API}/v1/dreams").respond(json={})
    guard, client = metered()
    with running(guard, Scope(tag="test_x", budget=Decimal("1"))), pytest.raises(UnboundedCallError):
        client.post("/v1/dreams", body={}, cast_to=object)
    assert route.call_count == 0
    assert [r.scope for r in guard.refusals] == ["test test_x"]


def test_without_a_budget_an_unknown_endpoint_is_sent_and_recorded_unpriced(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{API}/v1/sessions/sesn_1/events").respond(json={"data": []})
    guard, client = metered()
    client.post("/v1/sessions/sesn_1/events#x", body={"events": []}, cast_to=object)
    assert route.call_count == 1
    [record] = guard.records
    assert (record.model, record.unpriced, record.cost_usd) == ("POST /v1/sessions/sesn_1/events", True, 0)


def test_without_a_budget_an_unreadable_messages_body_is_priced_from_the_response(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(f"{API}/v1/messages").respond(json=message())
    guard, client = metered()
    client.post("/v1/messages", content=_chunks(), cast_to=Message)
    [record] = guard.records
    assert record.model == MODEL
    assert record.cost_usd == PriceBook().cost(Usage(input_tokens=12, output_tokens=7), MODEL)


FREE = [
    ("POST", "/v1/messages/count_tokens", {"input_tokens": 3}),
    ("POST", "/v1/messages/count_tokens?beta=true", {"input_tokens": 3}),
    ("GET", "/v1/models", {"data": []}),
    ("POST", "/v1/files", {"id": "file_1"}),
    ("GET", "/v1/messages/batches/msgbatch_1", {"id": "msgbatch_1"}),
    ("GET", "/v1/messages/batches/msgbatch_1/results", {}),
    ("GET", "/v1/messages/batches", {"data": []}),
    ("POST", "/v1/messages/batches/msgbatch_1/cancel", {"id": "msgbatch_1"}),
    ("DELETE", "/v1/messages/batches/msgbatch_1", {"id": "msgbatch_1"}),
    ("GET", "/v1/sessions/sesn_1", {}),
]


@pytest.mark.parametrize(("method", "path", "answer"), FREE, ids=[f"{m} {p}" for m, p, _ in FREE])
def test_known_free_endpoints_pass_untouched_under_a_zero_budget(
    respx_mock: respx.MockRouter, method: str, path: str, answer: dict[str, Any]
) -> None:
    route = respx_mock.route(method=method, host="api.anthropic.com").respond(json=answer)
    guard, client = metered("0")
    options: dict[str, Any] = {"cast_to": object}
    if method == "POST":
        options["body"] = {"model": MODEL, "messages": []}
    getattr(client, method.lower())(path, **options)
    assert route.call_count == 1
    assert guard.records == [] and guard.refusals == []


def test_declared_free_endpoints_pass_untouched_under_a_zero_budget(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{API}/v1/sessions/sesn_1/archive").respond(json={})
    guard, client = metered("0", free_endpoints=("/v1/sessions/*/archive",))
    client.post("/v1/sessions/sesn_1/archive", body={}, cast_to=object)
    assert route.call_count == 1 and guard.records == [] and guard.refusals == []
    respx_mock.post(f"{API}/v1/sessions/sesn_1/events").respond(json={})
    with pytest.raises(UnboundedCallError):  # the pattern covers what it says, no more
        client.post("/v1/sessions/sesn_1/events", body={}, cast_to=object)


# -- retries below the SDK (a custom transport) ----------------------------------------------------------------
class ResendOnReadTimeout(httpx2.BaseTransport):
    """A user's transport that re-sends a request once when the reply times out."""

    def __init__(self) -> None:
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return self.inner.handle_request(request)
        except httpx2.ReadTimeout:
            return self.inner.handle_request(request)


def test_a_transport_that_resends_below_the_sdk_is_metered_once_while_the_api_saw_two(
    respx_mock: respx.MockRouter,
) -> None:
    # The first send reached the server (which may have billed it); its reply timed out; the transport sent
    # again. The middleware runs above the transport: it sees one attempt, settled from the second reply.
    route = respx_mock.post(f"{API}/v1/messages")
    route.side_effect = [httpx2.ReadTimeout("timed out"), httpx2.Response(200, json=message())]
    guard = CostGuard(ledger=InMemoryLedger(limit=Decimal("1")))
    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        middleware=[middleware_for(guard)],
        max_retries=0,
        http_client=httpx2.Client(transport=ResendOnReadTimeout()),
    )
    client.messages.create(**BODY)  # type: ignore[call-overload]
    assert route.call_count == 2  # sent twice
    assert len(guard.records) == 1  # metered once: the first send is not counted
    assert (guard.records[0].retries, guard.records[0].estimated) == (0, False)


def test_the_sdks_own_retry_after_a_read_timeout_is_metered_per_attempt(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{API}/v1/messages")
    route.side_effect = [httpx2.ReadTimeout("timed out"), httpx2.Response(200, json=message())]
    guard = CostGuard(ledger=InMemoryLedger(limit=Decimal("1")))
    client = anthropic.Anthropic(api_key="sk-ant-test", middleware=[middleware_for(guard)], max_retries=1)
    client.with_options(timeout=5).messages.create(**BODY)  # type: ignore[call-overload]
    assert route.call_count == 2
    timed_out, answered = guard.records
    assert timed_out.estimated and timed_out.cost_usd == timed_out.reserved_usd  # charged its worst case
    assert (answered.retries, answered.estimated) == (1, False)


# -- the plugin -----------------------------------------------------------------------------------------------
SUITE = """
import anthropic
import pytest

from pytest_costguard import BudgetExceededError

API = "https://api.anthropic.com"

@pytest.mark.respx(base_url=API, assert_all_called=False)
def test_session_event(respx_mock):
    route = respx_mock.post("/v1/sessions/sesn_1/events").respond(json={"data": []})
    client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0)
    try:
        client.post("/v1/sessions/sesn_1/events", body={"events": []}, cast_to=object)
    except BudgetExceededError as exc:
        print("REFUSED:", exc)  # swallowed by the code under test: the run must still fail
    print("SENT:", route.call_count)
"""


def test_a_refused_unknown_endpoint_fails_the_run_even_when_swallowed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:asyncio", "-s", "--llm-budget=1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*REFUSED: LLM session budget cannot bound POST /v1/sessions/sesn_1/events:*",
            "SENT: 0",
            "*LLM BUDGET EXCEEDED: 1 call refused by the session budget*",
        ]
    )


@pytest.mark.parametrize(
    ("args", "ini"),
    [
        pytest.param(["--llm-free-endpoint=/v1/sessions/*"], "", id="on the command line"),
        pytest.param([], "llm_free_endpoints =\n    /v1/skills\n    /v1/sessions/*/events", id="in the ini file"),
    ],
)
def test_an_endpoint_declared_free_is_sent_under_the_budget(
    pytester: pytest.Pytester, args: list[str], ini: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest("-p", "no:asyncio", "-s", "--llm-budget=1", *args)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*SENT: 1"])
    result.stdout.no_fnmatch_line("REFUSED*")


def test_without_a_budget_the_summary_warns_of_a_call_it_could_not_price(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:asyncio", "-s", "--llm-meter")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*SENT: 1", "WARNING: 1 call the meter cannot price (POST /v1/sessions/sesn_1/events: *llm_free_endpoints*"]
    )
    result.stdout.no_fnmatch_line("*answered by a model with no known price*")


@pytest.mark.parametrize("pattern", ["sessions/*", "/v1/a b", "/v1/x?beta=true"])
def test_a_free_endpoint_that_is_not_a_path_is_a_usage_error(pytester: pytest.Pytester, pattern: str) -> None:
    pytester.makeini(f"[pytest]\nllm_free_endpoints = {pattern}\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:asyncio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llm_free_endpoints in tox.ini*is not an endpoint path*"])


# -- clients built before metering starts -----------------------------------------------------------------------
EARLY_PLUGIN = """
from fakeapi import FakeAPI

API = FakeAPI()
CLIENT = API.client(max_retries=0)  # built when pytest imports this plugin, before costguard patches the SDK
ASYNC_CLIENT = API.async_client(max_retries=0)
"""

EARLY_SUITE = """
import asyncio

import pytest

from earlyplugin import API, ASYNC_CLIENT, CLIENT
from pytest_costguard import BudgetExceededError

KW = dict(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

def test_sync(llm_cost):
    CLIENT.messages.create(**KW)
    asyncio.run(ASYNC_CLIENT.messages.create(**KW))
    with CLIENT.messages.stream(**KW) as stream:
        stream.until_done()
    assert llm_cost.calls == 3 == len(API.billed)
    assert CLIENT.middleware == () and ASYNC_CLIENT.middleware == ()  # the clients themselves are untouched

@pytest.mark.llm_budget(0, expect_refusal=True)
def test_capped():
    with pytest.raises(BudgetExceededError):
        CLIENT.messages.create(**KW)
    assert len(API.billed) == 3  # nothing more was sent
"""


def test_a_client_built_by_a_p_plugin_before_the_patch_is_metered_and_capped(
    fake_pytester: pytest.Pytester,
) -> None:
    import anthropic._base_client as base

    from pytest_costguard.providers.anthropic import patch

    original = base.SyncAPIClient.__dict__["request"], base.AsyncAPIClient.__dict__["request"]
    fake_pytester.makepyfile(earlyplugin=EARLY_PLUGIN, test_early=EARLY_SUITE)
    result = fake_pytester.runpytest("-p", "earlyplugin", "--llm-meter")
    result.assert_outcomes(passed=2)
    assert not patch.is_patched()  # the run put the SDK's `request` methods back
    assert (base.SyncAPIClient.__dict__["request"], base.AsyncAPIClient.__dict__["request"]) == original
