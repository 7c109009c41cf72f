"""Faults: the failures the emulator injects, queued through its API or asked for by a marker in the prompt.

A marker `[[costguard:fault=KIND]]` fails every attempt; `[[costguard:fault=KINDxN]]` fails the first N
attempts of that exact request body; parameters follow a comma: `[[costguard:fault=429x2,retry_after=0.01]]`.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ERROR_TYPES, ApiError
from .wire import compact

__all__ = [
    "DEFAULT_SLOW_SECONDS",
    "FAULT_KINDS",
    "FAULT_MESSAGES",
    "STATUS_FAULTS",
    "Fault",
    "FaultQueue",
    "check_times",
    "make_fault",
]

DEFAULT_SLOW_SECONDS = 10.0
FAULT_MESSAGES: Mapping[int, str] = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource",
    404: "The requested resource could not be found",
    413: "Request exceeds the maximum allowed number of bytes",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
"""The message an injected status fault answers with, unless the fault gives its own."""
STATUS_FAULTS = frozenset(str(status) for status in ERROR_TYPES)
FAULT_KINDS: frozenset[str] = STATUS_FAULTS | {"stream_error", "drop", "malformed", "no_usage", "slow"}
"""Every fault the emulator can inject, by name."""

_FAULT_MARKER = re.compile(r"\[\[costguard:fault=([a-z0-9_]+?)(?:x(\d+))?((?:[,;][a-z_]+=[^,;\]]*)*)\]\]")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure."""

    kind: str
    """One of `FAULT_KINDS`: a status ("429") or a way to fail ("drop", "slow", ...)."""
    retry_after: float | None = None
    """Seconds to put in the `retry-after` headers of a status fault."""
    seconds: float | None = None
    """How long a `slow` fault waits before answering."""
    message: str | None = None
    """The error message to answer with instead of the default one."""

    def as_dict(self) -> dict[str, Any]:
        """Return the fault as JSON-ready parameters."""
        params = {"retry_after": self.retry_after, "seconds": self.seconds, "message": self.message}
        return {"kind": self.kind, **{k: v for k, v in params.items() if v is not None}}

    def status_error(self) -> ApiError:
        """Return the error a status fault answers with (`stream_error` stands for a 529 outside a stream)."""
        status = 529 if self.kind == "stream_error" else int(self.kind)
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = str(math.ceil(self.retry_after))
            headers["retry-after-ms"] = str(round(self.retry_after * 1000))
        if status == 429:
            headers["anthropic-ratelimit-requests-remaining"] = "0"
        message = self.message or f"{FAULT_MESSAGES[status]} (injected by the costguard emulator)"
        return ApiError(status, message, headers)

    def batch_error(self) -> ApiError:
        """Return the error a batch request meeting this fault ends with (no connection to drop or slow down)."""
        if self.kind in STATUS_FAULTS or self.kind == "stream_error":
            return self.status_error()
        return ApiError(500, self.message or f"{FAULT_MESSAGES[500]} (injected by the costguard emulator)")


@dataclass(slots=True)
class _Queued:
    """A fault waiting in the queue, and how many more requests it fails (None: every one)."""

    fault: Fault
    remaining: int | None


def make_fault(kind: str | int, **params: Any) -> Fault:
    """Build a `Fault`, raising ValueError for an unknown kind or parameter."""
    name = str(kind)
    if name not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {name!r}; known kinds: {', '.join(sorted(FAULT_KINDS))}")
    unknown = set(params) - {"retry_after", "seconds", "message"}
    if unknown:
        raise ValueError(f"unknown fault parameter(s) for {name!r}: {', '.join(sorted(unknown))}")
    numbers: dict[str, float | None] = {}
    for key in ("retry_after", "seconds"):
        value = params.get(key)
        if value is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"fault parameter {key}={value!r} is not a number") from None
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"fault parameter {key}={value!r} must be a finite number >= 0")
            value = number
        numbers[key] = value
    retry_after = numbers["retry_after"]
    if name == "429" and retry_after is None:
        retry_after = 0.0
    seconds = numbers["seconds"]
    if name == "slow" and seconds is None:
        seconds = DEFAULT_SLOW_SECONDS
    message = params.get("message")
    return Fault(name, retry_after, seconds, None if message is None else str(message))


def check_times(times: Any) -> int | None:
    """Return a validated `times` (how many requests a fault fails), raising ValueError for a bad one."""
    if times is None:
        return None
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError(f"times={times!r}: expected a positive integer, or None for every request")
    return times


def _marker_fault(text: str) -> tuple[Fault, int | None] | None:
    """Return the fault a `[[costguard:fault=...]]` marker in `text` asks for, and how many attempts fail."""
    match = _FAULT_MARKER.search(text)
    if match is None:
        return None
    params: dict[str, Any] = {}
    for pair in filter(None, re.split(r"[,;]", match.group(3))):
        key, _, value = pair.partition("=")
        params[key] = value
    try:
        fault = make_fault(match.group(1), **params)
    except ValueError as exc:
        raise ApiError(400, f"costguard fault marker {match.group(0)}: {exc}") from None
    return fault, (int(match.group(2)) if match.group(2) else None)


class FaultQueue:
    """The queued faults, and how many attempts each marked request body has made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._marker_attempts: dict[str, int] = {}

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Return the queued faults, next first, as JSON-ready dicts with their `times`."""
        with self._lock:
            return [{**q.fault.as_dict(), "times": q.remaining} for q in self._queue]

    def push(self, faults: list[tuple[Fault, int | None]]) -> None:
        """Queue faults, each for its number of requests (None: every request until cleared)."""
        with self._lock:
            self._queue.extend(_Queued(fault, times) for fault, times in faults)

    def push_json(self, payload: Any) -> int:
        """Queue the faults of a `{"faults": [{"kind": ..., "times": ..., ...}]}` body; return how many."""
        faults = payload.get("faults") if isinstance(payload, Mapping) else None
        if not isinstance(faults, list):
            raise ValueError('expected {"faults": [{"kind": "...", "times": 1, ...}]}')
        queued: list[tuple[Fault, int | None]] = []
        for item in faults:
            if not isinstance(item, Mapping) or "kind" not in item:
                raise ValueError(f"each fault needs a kind: {item!r}")
            params = {k: v for k, v in item.items() if k not in ("kind", "times")}
            queued.append((make_fault(item["kind"], **params), check_times(item.get("times", 1))))
        self.push(queued)
        return len(queued)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._queue.clear()

    def reset(self) -> None:
        """Drop every queued fault and forget the marker attempt counters."""
        with self._lock:
            self._queue.clear()
            self._marker_attempts.clear()

    def next_queued(self) -> Fault | None:
        """Spend one request of the fault at the head of the queue and return it, or None when none is queued."""
        with self._lock:
            if not self._queue:
                return None
            head = self._queue[0]
            if head.remaining is not None:
                head.remaining -= 1
                if head.remaining <= 0:
                    self._queue.pop(0)
            return head.fault

    def next_marked(self, body: Mapping[str, Any], text: str) -> Fault | None:
        """Return the fault a marker in `text` asks for on this attempt of `body`, or None."""
        marked = _marker_fault(text)
        if marked is None:
            return None
        fault, times = marked
        key = hashlib.sha256(compact(body).encode()).hexdigest()
        with self._lock:
            attempt = self._marker_attempts.get(key, 0) + 1
            self._marker_attempts[key] = attempt
        return fault if times is None or attempt <= times else None

    def next_fault(self, body: Mapping[str, Any], text: str) -> Fault | None:
        """Return the fault this Messages request meets: the queue first, then a marker in its text."""
        return self.next_queued() or self.next_marked(body, text)
