"""Settle a Message Batch when its results are read: meter the JSONL results as they pass to the caller.

`messages.batches.results(id)` (and the beta one) reads `GET .../v1/messages/batches/{id}/results`, a JSON
Lines stream the SDK decodes lazily. Its bytes are followed as the caller reads them, never ahead: each complete
line hands its result to the guard, and a stream read to its end settles the batch (`CostGuard.batch_results_read`).
A read stopped early leaves the batch held; whatever was read counts when the session ends.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...metering.guard import CostGuard

__all__ = ["ResultsMeter", "results_batch_id", "watch_results"]

_RESULTS = re.compile(r"/messages/batches/([^/?#]+)/results/?(?:[?#]|$)")


def results_batch_id(method: str, url: str) -> str | None:
    """The batch whose results a request reads, or None when it reads none."""
    if method.lower() != "get":
        return None
    found = _RESULTS.search(url)
    return found.group(1) if found else None


def batch_id_of(http: Any) -> str | None:
    """The id of the batch a creation response (already read) describes, or None."""
    try:
        body = json.loads(http.content)
    except Exception:
        return None
    batch_id = body.get("id") if isinstance(body, dict) else None
    return batch_id if isinstance(batch_id, str) and batch_id else None


class ResultsMeter:
    """Follow a results stream's bytes, line by line; settle the batch once the stream has been read to its end."""

    __slots__ = ("_batch_id", "_buffer", "_guard")

    def __init__(self, guard: CostGuard, batch_id: str) -> None:
        self._guard = guard
        self._batch_id = batch_id
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream, as the caller gets them."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line)

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = json.loads(raw)
        except ValueError:
            return
        if isinstance(line, dict):
            self._guard.batch_result(self._batch_id, line)

    def end(self) -> None:
        """The stream was read to its end: take a last line without a newline, and settle the batch."""
        self._line(self._buffer)
        self._buffer = b""
        self._guard.batch_results_read(self._batch_id)


def watch_results(guard: CostGuard, batch_id: str, response: Any, *, asynchronous: bool) -> None:
    """Meter the results `response` carries (an SDK `APIResponse` whose body the caller has not read yet)."""
    http = response.http_response
    if not http.is_success:
        return
    meter = ResultsMeter(guard, batch_id)
    if http.is_stream_consumed or http.is_closed:
        with contextlib.suppress(Exception):  # closed unread: the batch stays held
            meter.feed(http.content)
            meter.end()
        return
    http.stream = _stream_class(asynchronous)(http.stream, meter)


_classes: dict[bool, type[Any]] = {}


def _stream_class(asynchronous: bool) -> type[Any]:
    cls = _classes.get(asynchronous)
    if cls is None:
        cls = _classes[asynchronous] = _make_stream_class(asynchronous)
    return cls


def _make_stream_class(asynchronous: bool) -> type[Any]:
    import httpx2

    if asynchronous:

        class AsyncResultsStream(httpx2.AsyncByteStream):
            def __init__(self, inner: Any, meter: ResultsMeter) -> None:
                self._inner, self._meter = inner, meter

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in self._inner:
                    self._meter.feed(chunk)
                    yield chunk
                self._meter.end()

            async def aclose(self) -> None:
                await self._inner.aclose()

        return AsyncResultsStream

    class ResultsStream(httpx2.SyncByteStream):
        def __init__(self, inner: Any, meter: ResultsMeter) -> None:
            self._inner, self._meter = inner, meter

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._meter.feed(chunk)
                yield chunk
            self._meter.end()

        def close(self) -> None:
            self._inner.close()

    return ResultsStream
