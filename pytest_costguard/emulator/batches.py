"""Message Batches: requests submitted together, answered later as JSONL results, billed at 50% when they succeed.

A batch ends as soon as it is created, unless the emulator holds batches (`Emulator.hold_batches`): then it
stays "in_progress" until `Emulator.end_batches()`, a cancel turns it "canceling" (its requests end
`canceled`), and one older than 24 hours by the emulator's clock ends with its requests `expired`. Only a
`succeeded` request is billed; what each request answers is decided by the `Run` the store is given.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import ApiError
from .validation import validate_request
from .wire import new_id

__all__ = ["BATCH_LIFETIME_SECONDS", "BatchStore", "Run", "check_batch_requests"]

BATCH_LIFETIME_SECONDS = 24 * 3600.0
"""How long a batch may stay in progress before its unprocessed requests expire."""
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")

Run = Callable[[str, str, Mapping[str, Any]], dict[str, Any]]
"""Answer one request of a batch: (batch id, custom id, params) -> its `result` object."""


def check_batch_requests(body: Any) -> list[tuple[str, dict[str, Any]]]:
    """Return the (custom_id, params) of a batch creation body, raising `ApiError` (400) where the API would."""
    requests = body.get("requests") if isinstance(body, Mapping) else None
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "requests: Input should be a non-empty list")
    checked: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, request in enumerate(requests):
        if not isinstance(request, Mapping):
            raise ApiError(400, f"requests.{i}: Input should be a valid dictionary")
        custom_id, params = request.get("custom_id"), request.get("params", {})
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise ApiError(400, f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise ApiError(400, f"requests.{i}.custom_id: custom_id {custom_id!r} is not unique in the batch")
        seen.add(custom_id)
        try:
            validate_request(params)
        except ApiError as exc:
            raise ApiError(400, f"requests.{i}.params: {exc.message}") from None
        assert isinstance(params, Mapping)  # validate_request accepts only a JSON object
        if params.get("stream"):
            raise ApiError(400, f"requests.{i}.params.stream: streaming is not supported in batches")
        checked.append((custom_id, dict(params)))
    return checked


def _rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class _Batch:
    id: str
    created_at: float
    """Wall-clock creation time (what the API reports)."""
    created_on_clock: float
    """Creation time on the emulator's clock (what expiry is measured with)."""
    requests: list[tuple[str, dict[str, Any]]]
    status: str = "in_progress"
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, base_url: str) -> dict[str, Any]:
        counts = dict.fromkeys(_RESULT_TYPES, 0)
        for result in self.results:
            counts[result["result"]["type"]] += 1
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": {"processing": 0 if ended else len(self.requests), **counts},
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.created_at + BATCH_LIFETIME_SECONDS),
            "ended_at": _rfc3339(self.ended_at),
            "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class BatchStore:
    """The batches submitted to the emulator, newest last."""

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        # Held while a batch is processed too: its requests bill one by one and must not be ended twice.
        self._lock = threading.RLock()
        self._batches: dict[str, _Batch] = {}

    def clear(self) -> None:
        """Forget every batch."""
        with self._lock:
            self._batches.clear()

    def create(self, requests: list[tuple[str, dict[str, Any]]], now: float, run: Run | None) -> str:
        """Store a batch and return its id; end it at once with `run` unless `run` is None (held)."""
        batch = _Batch(new_id("msgbatch_01", 24), self._wall_clock(), now, requests)
        with self._lock:
            self._batches[batch.id] = batch
            if run is not None:
                self._end(batch, run)
        return batch.id

    def view(self, batch_id: str, base_url: str) -> dict[str, Any]:
        """Return a batch as the API shows it, raising `ApiError` (404) for an unknown id."""
        with self._lock:
            return self._get(batch_id).as_json(base_url)

    def page(self, base_url: str, *, limit: int, after_id: str | None, before_id: str | None) -> dict[str, Any]:
        """Return one page of batches, newest first, as the list endpoint answers it."""
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
        ids = [batch.id for batch in newest_first]
        start, stop = 0, len(newest_first)
        if after_id is not None:
            start = ids.index(after_id) + 1 if after_id in ids else stop
        if before_id is not None:
            stop = ids.index(before_id) if before_id in ids else 0
            start = max(start, stop - limit)
        chosen = newest_first[start:stop][:limit]
        data = [batch.as_json(base_url) for batch in chosen]
        more = start + len(chosen) < stop if before_id is None else start > 0
        return {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """Return an ended batch's results, in request order, raising `ApiError` (404) before it ends."""
        with self._lock:
            batch = self._get(batch_id)
            if batch.status != "ended":
                raise ApiError(404, f"Batch {batch_id} has not ended: its results are not available yet")
            return list(batch.results)

    def cancel(self, batch_id: str, run: Run | None) -> None:
        """Start cancelling a batch in progress (an ended batch is left as it is)."""
        with self._lock:
            batch = self._get(batch_id)
            if batch.status != "in_progress":
                return
            batch.status, batch.cancel_initiated_at = "canceling", self._wall_clock()
            if run is not None:
                self._end(batch, run)

    def delete(self, batch_id: str) -> None:
        """Delete an ended batch, raising `ApiError` for an unknown one or one still in progress."""
        with self._lock:
            batch = self._get(batch_id)
            if batch.status != "ended":
                raise ApiError(400, f"Batch {batch_id} cannot be deleted while it is {batch.status}: cancel it first")
            del self._batches[batch_id]

    def end_all(self, run: Run) -> int:
        """End every batch still in progress or canceling; return how many."""
        with self._lock:
            open_batches = [batch for batch in self._batches.values() if batch.status != "ended"]
            for batch in open_batches:
                self._end(batch, run)
        return len(open_batches)

    def expire(self, now: float) -> None:
        """End, with their requests expired, the batches in progress for longer than a batch may live."""
        with self._lock:
            for batch in self._batches.values():
                if batch.status != "ended" and now - batch.created_on_clock >= BATCH_LIFETIME_SECONDS:
                    self._end(batch, None, unprocessed="expired")

    def _get(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"message_batch_id: no batch {batch_id!r}")
        return batch

    def _end(self, batch: _Batch, run: Run | None, unprocessed: str = "canceled") -> None:
        """Answer every request of `batch` (with `run`, or as `unprocessed` when cancelled or expired)."""
        for custom_id, params in batch.requests:
            if batch.status == "canceling" or run is None:
                result: dict[str, Any] = {"type": unprocessed}
            else:
                result = run(batch.id, custom_id, params)
            batch.results.append({"custom_id": custom_id, "result": result})
        batch.status, batch.ended_at = "ended", self._wall_clock()
