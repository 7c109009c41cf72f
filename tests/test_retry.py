from __future__ import annotations

import asyncio
import email.utils
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import anthropic
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_costguard.core.retry import (
    TRANSIENT_STATUS_CODES,
    RetryPolicy,
    acall_with_retry,
    call_with_retry,
    is_transient,
    retry_after_seconds,
)

REQUEST = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
NO_JITTER = RetryPolicy(jitter=0.0)


def response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, request=REQUEST)


def status_error(
    status: int,
    headers: dict[str, str] | None = None,
    *,
    cls: type[anthropic.APIStatusError] = anthropic.APIStatusError,
    body: object = None,
) -> anthropic.APIStatusError:
    return cls(f"Error code: {status}", response=response(status, headers), body=body)


def rate_limited(**headers: str) -> anthropic.RateLimitError:
    return anthropic.RateLimitError("rate limited", response=response(429, headers), body=None)


def error_body(error_type: str, error_code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": "m"}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error}


class Script:
    """A callable that raises the queued errors one per call, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def acall(self) -> str:
        return self()


class Always:
    """A callable that raises the same error on every call."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        raise self.error

    async def acall(self) -> str:
        return self()


def zero() -> float:
    return 0.0


# --- is_transient ---


@pytest.mark.parametrize(
    "exc",
    [
        anthropic.RateLimitError("x", response=response(429), body=None),
        anthropic.InternalServerError("x", response=response(500), body=None),
        anthropic.OverloadedError("x", response=response(529), body=None),
        anthropic.ServiceUnavailableError("x", response=response(503), body=None),
        anthropic.GatewayTimeoutError("x", response=response(504), body=None),
        status_error(502),
        anthropic.RequestTimeoutError("x", response=response(408), body=None),
        anthropic.ConflictError("x", response=response(409), body=None),
        anthropic.APIConnectionError(request=REQUEST),
        anthropic.APITimeoutError(REQUEST),
        ConnectionResetError(),
        TimeoutError(),
        httpx2.ConnectError("refused"),
        httpx2.ReadTimeout("slow"),
        httpx2.RemoteProtocolError("peer closed connection"),
        httpx2.HTTPStatusError("x", request=REQUEST, response=response(503)),
    ],
    ids=type,
)
def test_connection_errors_timeouts_rate_limits_and_server_errors_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "cls",
    [
        anthropic.BadRequestError,
        anthropic.AuthenticationError,
        anthropic.PaymentRequiredError,
        anthropic.PermissionDeniedError,
        anthropic.NotFoundError,
        anthropic.ContentTooLargeError,
        anthropic.UnprocessableEntityError,
    ],
)
def test_a_client_error_is_never_retried(cls: type[anthropic.APIStatusError]) -> None:
    exc = cls("x", response=response(cls.status_code), body=None)
    fail = Always(exc)
    with pytest.raises(cls) as excinfo:
        call_with_retry(fail, sleep=lambda _: pytest.fail("slept"))
    assert excinfo.value is exc
    assert fail.calls == 1


def test_a_400_is_never_retried_even_if_the_server_says_retry() -> None:
    assert not is_transient(status_error(400, {"x-should-retry": "true"}, cls=anthropic.BadRequestError))


def test_x_should_retry_false_stops_a_retry_of_a_rate_limit() -> None:
    assert not is_transient(rate_limited(**{"x-should-retry": "false"}))


@pytest.mark.parametrize(
    "cls", [anthropic.EnforcedSpendLimitReachedError, anthropic.ContractSpendLimitReachedError]
)
def test_a_spend_cap_429_is_never_retried(cls: type[anthropic.APIStatusError]) -> None:
    code = "enforced" if cls is anthropic.EnforcedSpendLimitReachedError else "contract"
    exc = status_error(429, cls=cls, body=error_body("rate_limit_error", f"{code}_spend_limit_reached"))
    fail = Always(exc)
    with pytest.raises(cls):
        call_with_retry(fail, sleep=lambda _: None)
    assert fail.calls == 1


def test_a_spend_cap_is_recognised_from_the_body_alone() -> None:
    # The class a 429 gets depends on the SDK version; the body's error_code does not.
    body = error_body("rate_limit_error", "enforced_spend_limit_reached")
    assert not is_transient(status_error(429, cls=anthropic.RateLimitError, body=body))


def test_a_spend_cap_is_recognised_without_anthropic_by_duck_typing() -> None:
    class FakeError(Exception):
        status_code = 429
        body = error_body("rate_limit_error", "workspace_spend_limit_reached")

    assert not is_transient(FakeError())
    FakeError.body = error_body("rate_limit_error")
    assert is_transient(FakeError())


def test_a_ramp_limit_429_is_retried() -> None:
    exc = status_error(
        429, cls=anthropic.RampLimitExceededError, body=error_body("rate_limit_error", "ramp_limit_exceeded")
    )
    assert is_transient(exc)


def test_a_billing_error_is_never_retried() -> None:
    assert not is_transient(status_error(500, body=error_body("billing_error")))


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bug"),
        KeyError("bug"),
        httpx2.UnsupportedProtocol("ftp://"),
        httpx2.LocalProtocolError("bad header"),
        status_error(200, body=error_body("overloaded_error")),  # an `error` event inside a stream
        anthropic.APIResponseValidationError(response(200), body={}),
    ],
    ids=type,
)
def test_bugs_and_unrecognised_errors_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


@given(st.integers(100, 599))
def test_a_non_transient_status_is_never_retried(status: int) -> None:
    exc = status_error(status)
    fail = Always(exc)
    delays: list[float] = []
    try:
        call_with_retry(fail, max_retries=3, sleep=delays.append, rng=zero)
    except anthropic.APIStatusError as raised:
        assert raised is exc
    transient = status in {408, 409, 429} or (500 <= status <= 599 and status not in {501, 505, 511})
    assert is_transient(exc) == transient
    assert fail.calls == (4 if transient else 1)
    assert len(delays) == fail.calls - 1


def test_the_transient_statuses_include_the_ones_the_sdk_retries() -> None:
    assert {408, 409, 429, 500, 502, 503, 504, 529} <= TRANSIENT_STATUS_CODES
    assert not {400, 401, 402, 403, 404, 413, 422, 501} & TRANSIENT_STATUS_CODES


# --- retry_after_seconds ---


def test_retry_after_in_seconds_is_read() -> None:
    assert retry_after_seconds(rate_limited(**{"retry-after": "7"})) == 7.0
    assert retry_after_seconds(rate_limited(**{"retry-after": "1.5"})) == 1.5


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_seconds(rate_limited(**{"retry-after-ms": "250", "retry-after": "7"})) == 0.25


def test_retry_after_as_an_http_date_is_read() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after_seconds(rate_limited(**{"retry-after": when})) or 0) <= 30


def test_retry_after_as_a_date_in_the_past_means_now() -> None:
    assert retry_after_seconds(rate_limited(**{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


@pytest.mark.parametrize("value", ["soon", "-3", "nan", "inf", ""])
def test_a_nonsensical_retry_after_is_ignored(value: str) -> None:
    assert retry_after_seconds(rate_limited(**{"retry-after": value})) is None


def test_no_response_means_no_retry_after() -> None:
    assert retry_after_seconds(anthropic.APIConnectionError(request=REQUEST)) is None
    assert retry_after_seconds(rate_limited()) is None


def test_retry_after_is_read_from_a_plain_dict_case_insensitively() -> None:
    class FakeResponse:
        headers: ClassVar[dict[str, str]] = {"Retry-After": "3"}

    class FakeError(Exception):
        response = FakeResponse()

    assert retry_after_seconds(FakeError()) == 3.0


# --- call_with_retry ---


def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    script = Script(rate_limited(), anthropic.APIConnectionError(request=REQUEST))
    delays: list[float] = []
    assert call_with_retry(script, policy=NO_JITTER, sleep=delays.append) == "ok"
    assert script.calls == 3
    assert delays == [0.5, 1.0]


def test_backoff_doubles_and_is_capped_at_max_delay() -> None:
    fail = Always(rate_limited())
    delays: list[float] = []
    with pytest.raises(anthropic.RateLimitError):
        call_with_retry(fail, max_retries=7, policy=NO_JITTER, sleep=delays.append)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_takes_off_at_most_its_fraction() -> None:
    delays: list[float] = []
    with pytest.raises(anthropic.RateLimitError):
        call_with_retry(Always(rate_limited()), max_retries=2, sleep=delays.append, rng=lambda: 1.0)
    assert delays == [0.375, 0.75]


def test_max_retries_zero_makes_a_single_attempt() -> None:
    fail = Always(rate_limited())
    with pytest.raises(anthropic.RateLimitError):
        call_with_retry(fail, max_retries=0, sleep=lambda _: pytest.fail("slept"))
    assert fail.calls == 1


def test_max_retries_overrides_the_policy() -> None:
    fail = Always(rate_limited())
    with pytest.raises(anthropic.RateLimitError):
        call_with_retry(fail, max_retries=1, policy=RetryPolicy(max_retries=5), sleep=lambda _: None)
    assert fail.calls == 2


def test_the_default_policy_makes_four_attempts() -> None:
    fail = Always(rate_limited())
    with pytest.raises(anthropic.RateLimitError):
        call_with_retry(fail, sleep=lambda _: None)
    assert fail.calls == 4


def test_the_last_error_is_raised_when_retries_run_out() -> None:
    last = rate_limited()
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        call_with_retry(Script(rate_limited(), last), max_retries=1, sleep=lambda _: None)
    assert excinfo.value is last


@given(st.integers(0, 8), st.integers(0, 12))
def test_a_call_is_never_attempted_more_than_max_retries_plus_one_times(
    max_retries: int, failures: int
) -> None:
    script = Script(*(rate_limited() for _ in range(failures)))
    try:
        assert call_with_retry(script, max_retries=max_retries, sleep=lambda _: None) == "ok"
        assert failures <= max_retries
    except anthropic.RateLimitError:
        assert failures > max_retries
    assert script.calls == min(failures, max_retries) + 1


@given(
    st.integers(0, 6),
    st.floats(0, 2),
    st.floats(0, 20),
    st.floats(0, 1),
    st.lists(st.floats(0, 1, exclude_max=True), min_size=7, max_size=7),
)
def test_every_delay_lies_between_the_jittered_and_the_capped_backoff(
    max_retries: int, base: float, cap: float, jitter: float, draws: list[float]
) -> None:
    policy = RetryPolicy(max_retries=max_retries, base_delay=base, max_delay=cap, jitter=jitter)
    delays: list[float] = []
    with pytest.raises(anthropic.RateLimitError):
        call_with_retry(Always(rate_limited()), policy=policy, sleep=delays.append, rng=iter(draws).__next__)
    assert len(delays) == max_retries
    for n, delay in enumerate(delays):
        full = min(base * 2**n, cap)
        assert full * (1 - jitter) - 1e-9 <= delay <= full + 1e-9


def test_retry_after_replaces_the_computed_delay() -> None:
    script = Script(rate_limited(**{"retry-after": "3"}), rate_limited(**{"retry-after-ms": "1500"}))
    delays: list[float] = []
    assert call_with_retry(script, sleep=delays.append, rng=lambda: 0.5) == "ok"
    assert delays == [3.0, 1.5]


def test_retry_after_is_not_capped_by_max_delay() -> None:
    delays: list[float] = []
    call_with_retry(Script(rate_limited(**{"retry-after": "30"})), sleep=delays.append)
    assert delays == [30.0]


def test_a_zero_retry_after_falls_back_to_backoff() -> None:
    delays: list[float] = []
    call_with_retry(Script(rate_limited(**{"retry-after": "0"})), policy=NO_JITTER, sleep=delays.append)
    assert delays == [0.5]


def test_a_retry_after_longer_than_max_retry_after_gives_up_without_sleeping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = rate_limited(**{"retry-after": "61"})
    fail = Always(exc)
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        call_with_retry(fail, sleep=lambda _: pytest.fail("slept"))
    assert excinfo.value is exc
    assert fail.calls == 1
    assert "more than max_retry_after 60.0" in caplog.text


def test_max_retry_after_is_configurable() -> None:
    delays: list[float] = []
    policy = RetryPolicy(max_retry_after=120)
    call_with_retry(Script(rate_limited(**{"retry-after": "90"})), policy=policy, sleep=delays.append)
    assert delays == [90.0]


def test_on_retry_hears_each_retry_before_its_wait() -> None:
    first, second = rate_limited(), anthropic.APITimeoutError(REQUEST)
    heard: list[tuple[int, BaseException, float]] = []
    events: list[str] = []

    def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
        heard.append((attempt, exc, delay))
        events.append("on_retry")

    call_with_retry(
        Script(first, second), policy=NO_JITTER, sleep=lambda _: events.append("sleep"), on_retry=on_retry
    )
    assert heard == [(1, first, 0.5), (2, second, 1.0)]
    assert events == ["on_retry", "sleep", "on_retry", "sleep"]


def test_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pytest_costguard.core.retry"):
        call_with_retry(Script(rate_limited()), policy=NO_JITTER, sleep=lambda _: None)
    assert "retry 1/3 in 0.50 s after RateLimitError" in caplog.text


def test_keyboard_interrupt_is_never_caught() -> None:
    fail = Always(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        call_with_retry(fail, sleep=lambda _: None)
    assert fail.calls == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"base_delay": -0.1}, "base_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_retry_after": -1}, "max_retry_after"),
    ],
)
def test_a_bad_policy_is_rejected(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**kwargs)


def test_retries_get_a_real_sdk_client_past_overload() -> None:
    statuses = iter([529, 429, 200])
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        status = next(statuses)
        if status == 200:
            return httpx2.Response(200, json=message)
        return httpx2.Response(status, json=error_body("overloaded_error"), headers={"retry-after-ms": "10"})

    client = anthropic.Anthropic(
        api_key="test", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
    )
    delays: list[float] = []
    result = call_with_retry(
        lambda: client.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        ),
        sleep=delays.append,
    )
    assert result.content[0].type == "text"
    assert delays == [0.01, 0.01]


# --- acall_with_retry ---


class AsyncSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.mark.asyncio
async def test_the_async_twin_retries_until_it_succeeds() -> None:
    script = Script(rate_limited(), anthropic.OverloadedError("x", response=response(529), body=None))
    sleep = AsyncSleep()
    assert await acall_with_retry(script.acall, policy=NO_JITTER, sleep=sleep) == "ok"
    assert script.calls == 3
    assert sleep.delays == [0.5, 1.0]


@pytest.mark.asyncio
async def test_the_async_twin_never_retries_a_client_error() -> None:
    fail = Always(anthropic.BadRequestError("x", response=response(400), body=None))
    sleep = AsyncSleep()
    with pytest.raises(anthropic.BadRequestError):
        await acall_with_retry(fail.acall, sleep=sleep)
    assert (fail.calls, sleep.delays) == (1, [])


@pytest.mark.asyncio
async def test_the_async_twin_never_retries_a_cancellation() -> None:
    fail = Always(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await acall_with_retry(fail.acall, sleep=AsyncSleep())
    assert fail.calls == 1


errors = st.sampled_from(
    [
        lambda: rate_limited(),
        lambda: rate_limited(**{"retry-after": "2"}),
        lambda: rate_limited(**{"retry-after": "600"}),
        lambda: anthropic.APIConnectionError(request=REQUEST),
        lambda: anthropic.BadRequestError("x", response=response(400), body=None),
        lambda: anthropic.OverloadedError("x", response=response(529), body=None),
    ]
)


def run_sync(script: Script, max_retries: int, rng: Callable[[], float]) -> tuple[Any, int, list[float]]:
    delays: list[float] = []
    try:
        outcome: Any = call_with_retry(script, max_retries=max_retries, sleep=delays.append, rng=rng)
    except Exception as exc:
        outcome = type(exc)
    return outcome, script.calls, delays


def run_async(script: Script, max_retries: int, rng: Callable[[], float]) -> tuple[Any, int, list[float]]:
    sleep = AsyncSleep()

    async def main() -> Any:
        return await acall_with_retry(script.acall, max_retries=max_retries, sleep=sleep, rng=rng)

    try:
        outcome: Any = asyncio.run(main())
    except Exception as exc:
        outcome = type(exc)
    return outcome, script.calls, sleep.delays


@given(st.lists(errors, max_size=6), st.integers(0, 5), st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_the_async_twin_behaves_exactly_like_the_sync_one(
    makers: list[Callable[[], BaseException]], max_retries: int, draws: list[float]
) -> None:
    def rng() -> Callable[[], float]:
        numbers: Iterator[float] = iter(draws)
        return lambda: next(numbers)

    sync = run_sync(Script(*(make() for make in makers)), max_retries, rng())
    async_ = run_async(Script(*(make() for make in makers)), max_retries, rng())
    assert sync == async_


# --- the core stays light ---


def test_importing_the_retry_module_imports_neither_anthropic_nor_pytest() -> None:
    code = (
        "import sys, pytest_costguard.core.retry, pytest_costguard.core.routing, pytest_costguard.core.caching;"
        "print(sorted(m for m in ('anthropic', 'httpx2', 'httpx', 'pytest') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
