"""Retry transient API failures with capped exponential backoff; fail fast on everything else.

Errors are classified by duck typing (`status_code`, `response.headers`, `body`, class names), so this module
works on the anthropic SDK's exceptions without importing the SDK (its import costs over a second).

Mind the SDK's own retries: `anthropic.Anthropic` already retries twice by default. Wrapping its calls in
`call_with_retry` multiplies the attempts (3 x 4 = 12 by default) unless the client is built with
`max_retries=0`. Retrying is not free either: the SDK sends no idempotency key, so a request that timed out
after the server accepted it can be billed twice.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_RETRY",
    "TRANSIENT_STATUS_CODES",
    "RetryPolicy",
    "acall_with_retry",
    "call_with_retry",
    "is_transient",
    "retry_after_seconds",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# 408 request timeout, 409 lock conflict, 429 rate limit, 5xx server trouble and 529 overload: the same set
# the SDK retries, minus the 5xx codes that say the server will never do this (501, 505, 511).
TRANSIENT_STATUS_CODES: frozenset[int] = frozenset({408, 409, 429, *range(500, 600)}) - {501, 505, 511}

# Connection failures carry no status. Matched by class name across the MRO so neither anthropic nor httpx2
# has to be imported; httpx's LocalProtocolError and UnsupportedProtocol are deliberately absent: they are
# bugs on our side that no retry fixes.
_TRANSIENT_CLASS_NAMES = frozenset(
    {
        "APIConnectionError",  # anthropic (and openai); APITimeoutError subclasses it
        "APITimeoutError",
        "RetryableError",  # anthropic's explicit opt-in to retrying
        "TimeoutException",  # httpx / httpx2 / httpcore timeouts
        "NetworkError",  # httpx / httpx2 / httpcore connect, read, write errors
        "RemoteProtocolError",  # the server dropped the connection mid-response
    }
)

# 429s that are not rate limits but spend caps: waiting does not lift them within a test run, so retrying
# only burns time. Matched by the SDK's class names and by the error body's `details.error_code`.
_SPEND_CAP_CLASS_SUFFIX = "SpendLimitReachedError"
_SPEND_CAP_ERROR_CODE_SUFFIX = "_spend_limit_reached"
# `billing_error` bodies (credit exhausted) never succeed on retry either, whatever their status.
_PERMANENT_ERROR_TYPES = frozenset({"billing_error"})


def _mro_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        # httpx's HTTPStatusError (from `raise_for_status`) keeps its status on the response only.
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _header(exc: BaseException, name: str) -> str | None:
    """Return a response header of `exc`, matched case-insensitively (plain dicts are not)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    return value if isinstance(value, str) else None


def _error_object(exc: BaseException) -> Mapping[str, Any]:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    if isinstance(code, str):
        return code
    details = _error_object(exc).get("details")
    code = details.get("error_code") if isinstance(details, Mapping) else None
    return code if isinstance(code, str) else None


def _is_permanent(exc: BaseException) -> bool:
    """Return whether the error says outright that no retry can succeed."""
    if any(name.endswith(_SPEND_CAP_CLASS_SUFFIX) for name in _mro_names(exc)):
        return True
    code = _error_code(exc)
    if code is not None and code.endswith(_SPEND_CAP_ERROR_CODE_SUFFIX):
        return True
    error_type = getattr(exc, "type", None)
    if not isinstance(error_type, str):
        error_type = _error_object(exc).get("type")
    if error_type in _PERMANENT_ERROR_TYPES:
        return True
    return (_header(exc, "x-should-retry") or "").strip().lower() == "false"


def is_transient(exc: BaseException) -> bool:
    """Return whether `exc` is a failure that the same request may get past on a later attempt.

    True for connection errors and timeouts (anthropic's `APIConnectionError` / `APITimeoutError`, httpx2
    transport errors, builtin `ConnectionError` / `TimeoutError`) and for HTTP 408, 409, 429 and 5xx
    (501/505/511 excepted). False for every other status (400, 401, 402, 403, 404, 413, 422, ... and the
    200 of an `error` event inside a stream, as in the SDK), for the spend-cap 429s
    (`EnforcedSpendLimitReachedError`, `ContractSpendLimitReachedError`), for `billing_error` bodies, and
    whenever the server sent `x-should-retry: false`. `x-should-retry: true` is not honoured: it cannot
    make a 4xx request valid. Only `exc` itself is judged, not its `__cause__`.
    """
    if _is_permanent(exc):
        return False
    if _TRANSIENT_CLASS_NAMES & _mro_names(exc):
        return True
    status = _status_code(exc)
    if status is not None:
        return status in TRANSIENT_STATUS_CODES
    # asyncio.TimeoutError is a distinct class before Python 3.11.
    return isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError))


def retry_after_seconds(exc: BaseException) -> float | None:
    """Return how long the server asked us to wait, or None if it did not say (or said nonsense).

    `retry-after-ms` wins over `retry-after`, which may be seconds (floats tolerated) or an HTTP date;
    a date in the past means 0. Negative or non-finite values count as not said.
    """
    milliseconds = _finite(_header(exc, "retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = _header(exc, "retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # "-0000" parses as naive; HTTP dates are GMT anyway.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures.

    `max_retries` counts retries after the first attempt, as the anthropic SDK does: a call is attempted
    at most `max_retries + 1` times, and `max_retries=0` means a single attempt.
    """

    max_retries: int = 3
    """Retries after the first attempt (total attempts <= max_retries + 1)."""
    base_delay: float = 0.5
    """Seconds before the first retry; doubles with each further retry."""
    max_delay: float = 8.0
    """Cap on the computed backoff, in seconds (a server's retry-after is not capped by it)."""
    jitter: float = 0.25
    """Fraction of the backoff randomly taken off, so parallel clients do not retry in lockstep."""
    max_retry_after: float = 60.0
    """Longest retry-after, in seconds, worth waiting for; a longer one raises the error instead."""

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(f"RetryPolicy.max_retries must be an int >= 0, got {self.max_retries!r}")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}")

    def backoff(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Return the jittered delay before retry number `retry` (0 for the first retry)."""
        # min() before pow would overflow only past 2**1024; clamp the exponent instead.
        delay = min(self.base_delay * 2.0 ** min(retry, 64), self.max_delay)
        return delay * (1 - self.jitter * rng())


DEFAULT_RETRY = RetryPolicy()


def _resolve(policy: RetryPolicy | None, max_retries: int | None) -> RetryPolicy:
    policy = policy if policy is not None else DEFAULT_RETRY
    return policy if max_retries is None else replace(policy, max_retries=max_retries)


def _delay_or_give_up(
    exc: Exception, retry: int, policy: RetryPolicy, rng: Callable[[], float]
) -> float | None:
    """Return the delay before retry number `retry`, or None when `exc` must be raised instead."""
    if retry >= policy.max_retries or not is_transient(exc):
        return None
    asked = retry_after_seconds(exc)
    if not asked:
        # As in the SDK, "retry after 0" (or a date in the past) gets the normal backoff, not a hot loop.
        return policy.backoff(retry, rng)
    if asked > policy.max_retry_after:
        logger.warning(
            "giving up: the server asked to wait %.1f s, more than max_retry_after %.1f s",
            asked,
            policy.max_retry_after,
        )
        return None
    return asked


class _Retrying:
    """The state both retry loops share: which retry comes next, and what to do before it."""

    def __init__(
        self,
        policy: RetryPolicy,
        rng: Callable[[], float],
        on_retry: Callable[[int, BaseException, float], object] | None,
    ) -> None:
        self.policy = policy
        self.rng = rng
        self.on_retry = on_retry
        self.retry = 0

    def delay_after(self, exc: Exception) -> float | None:
        """Return how long to wait before retrying after `exc` (logged, reported), or None to raise it."""
        delay = _delay_or_give_up(exc, self.retry, self.policy, self.rng)
        if delay is None:
            return None
        logger.info(
            "retry %d/%d in %.2f s after %s: %s",
            self.retry + 1, self.policy.max_retries, delay, type(exc).__name__, exc,
        )
        if self.on_retry is not None:
            self.on_retry(self.retry + 1, exc, delay)
        self.retry += 1
        return delay


def call_with_retry(
    func: Callable[[], T],
    *,
    max_retries: int | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], object] = time.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[int, BaseException, float], object] | None = None,
) -> T:
    """Call `func`, retrying transient failures; raise anything else at once, unchanged.

    At most `max_retries + 1` calls are made (`max_retries` overrides `policy.max_retries`; the default
    policy allows 3 retries). Before retry n (0-based) it waits `min(base_delay * 2**n, max_delay)` less up
    to `jitter` of that, or exactly what a positive retry-after from the server asks; one above
    `policy.max_retry_after` raises the error instead of waiting. `on_retry(attempt, exc, delay)` is called
    before each wait, `attempt` being the 1-based number of the attempt that failed. When retries run out
    the last error is raised.
    """
    retrying = _Retrying(_resolve(policy, max_retries), rng, on_retry)
    while True:
        try:
            return func()
        except Exception as exc:
            delay = retrying.delay_after(exc)
            if delay is None:
                raise
            sleep(delay)


async def acall_with_retry(
    func: Callable[[], Awaitable[T]],
    *,
    max_retries: int | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[int, BaseException, float], object] | None = None,
) -> T:
    """Await `func()`, retrying transient failures exactly as `call_with_retry` does.

    `func` is called afresh for every attempt: pass the function, not a coroutine (one cannot be awaited
    twice). Cancellation is never retried.
    """
    retrying = _Retrying(_resolve(policy, max_retries), rng, on_retry)
    while True:
        try:
            return await func()
        except Exception as exc:
            delay = retrying.delay_after(exc)
            if delay is None:
                raise
            await sleep(delay)
