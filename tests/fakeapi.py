"""A scripted Messages API for tests: `httpx2.MockTransport` handler that bills like Anthropic.

Used directly by unit tests and copied into pytester runs (see `install_fakeapi` in tests/conftest.py).
Each reply's usage is fixed by the test; every billed reply is appended to `FakeAPI.billed` and, when
`log_path` is set, to a JSON-lines file so an outer test can sum what the "API" billed across processes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx2

DEFAULT_USAGE = {"input_tokens": 20, "output_tokens": 10}


class FakeAPI:
    """Answer Messages calls with scripted usage, errors and streams."""

    def __init__(self, usage: dict[str, Any] | None = None, *, log_path: str | None = None) -> None:
        self.usage = dict(usage or DEFAULT_USAGE)
        self.log_path = log_path
        self.billed: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.counted: list[dict[str, Any]] = []
        """Bodies sent to `count_tokens` (a preflight): free, never billed, kept apart from `requests`."""
        self.errors: list[int] = []
        self.cut_streams = False
        self.physical = True
        self.answer_model: str | None = None
        """Answer as this model whatever was asked (a gateway that substitutes another model)."""
        self._lock = threading.Lock()

    # -- the handler ---------------------------------------------------------------------------------------
    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if request.url.path.endswith("/messages/count_tokens"):
            with self._lock:
                self.counted.append(body)
            return httpx2.Response(200, json={"input_tokens": self._input_tokens(body)})
        if request.url.path.endswith("/messages/batches"):
            with self._lock:
                self.requests.append(body)
            return httpx2.Response(200, json=self._batch(len(body["requests"])))
        with self._lock:
            self.requests.append(body)
            status = self.errors.pop(0) if self.errors else None
        if status is not None:
            kind = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}.get(
                status, "api_error"
            )
            return httpx2.Response(
                status,
                headers={"retry-after": "0", "x-should-retry": "true" if status >= 429 else "false"},
                json={"type": "error", "error": {"type": kind, "message": f"scripted {status}"}},
            )
        usage = {**self.usage, "input_tokens": self._uncached_tokens(body)}
        usage["output_tokens"] = min(usage.get("output_tokens", 0), body.get("max_tokens", 10**9))
        if self.answer_model is not None:
            body = {**body, "model": self.answer_model}
        if body.get("stream"):
            return self._stream(body, usage)
        self._bill(body["model"], usage)
        return httpx2.Response(200, json=self._message(body["model"], usage))

    def _uncached_tokens(self, body: dict[str, Any]) -> int:
        tokens = int(self.usage.get("input_tokens", 0))
        # A byte-level BPE never yields more tokens than bytes: keep the script physically possible.
        text_bytes = len(json.dumps([body.get("system"), body["messages"]], ensure_ascii=False).encode())
        return min(tokens, text_bytes) if self.physical else tokens

    def _input_tokens(self, body: dict[str, Any]) -> int:
        """What `count_tokens` answers: every input token the request would be billed for."""
        cached = sum(int(self.usage.get(k, 0)) for k in ("cache_creation_input_tokens", "cache_read_input_tokens"))
        return self._uncached_tokens(body) + cached

    def _batch(self, count: int) -> dict[str, Any]:
        return {
            "id": "msgbatch_fake",
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {"processing": count, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-12-01T00:00:00Z",
            "expires_at": "2026-12-02T00:00:00Z",
            "ended_at": None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }

    def _message(self, model: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }

    def _stream(self, body: dict[str, Any], usage: dict[str, Any]) -> httpx2.Response:
        start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
        start = self._message(body["model"], start_usage) | {"content": [], "stop_reason": None}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
            ),
        ]
        if not self.cut_streams:
            events += [
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": usage["output_tokens"]},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
            self._bill(body["model"], usage)
        else:
            self._bill(body["model"], {**start_usage, "output_tokens": 1})

        def chunks() -> Iterator[bytes]:
            for name, data in events:
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(chunks()))

    def _bill(self, model: str, usage: dict[str, Any]) -> None:
        entry = {"model": model, "usage": usage}
        with self._lock:
            self.billed.append(entry)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    # -- clients -------------------------------------------------------------------------------------------
    def client(self, **kwargs: Any) -> Any:
        """Return a real `anthropic.Anthropic` whose HTTP goes to this fake."""
        import anthropic

        kwargs.setdefault("api_key", "sk-ant-test-secret")
        return anthropic.Anthropic(http_client=httpx2.Client(transport=httpx2.MockTransport(self)), **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """Return a real `anthropic.AsyncAnthropic` whose HTTP goes to this fake."""
        import anthropic

        kwargs.setdefault("api_key", "sk-ant-test-secret")
        return anthropic.AsyncAnthropic(
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)), **kwargs
        )


def billed_cost(billed: list[dict[str, Any]]) -> Any:
    """Price what the fake billed, exactly as the plugin should have."""
    from decimal import Decimal

    from pytest_costguard.core.pricing import default_price_book, usage_from_response

    book = default_price_book()
    return sum((book.cost(usage_from_response(b["usage"]), b["model"]) for b in billed), Decimal(0))
