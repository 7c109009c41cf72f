"""A respx-mocked OpenAI API for inner test suites: fixed replies with a given usage, every request logged.

Inner suites import it (`from openaiapi import OpenAIAPI`); the outer test reads `sent.jsonl` to see what went
on the wire, and computes by hand what the usage it chose costs.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx

BASE = "https://api.openai.com/v1"


def _sse(events: list[Any]) -> bytes:
    out = b""
    for event in events:
        if isinstance(event, str):
            out += f"data: {event}\n\n".encode()
        else:
            kind = event.get("type")
            prefix = f"event: {kind}\n" if kind else ""
            out += f"{prefix}data: {json.dumps(event)}\n\n".encode()
    return out


class OpenAIAPI:
    """Serve Chat Completions, Responses, Embeddings, Files and Batches with `usage` (in OpenAI's terms)."""

    def __init__(
        self,
        usage: dict[str, Any],
        *,
        model: str | None = None,
        service_tier: str = "default",
        text: str = "hello there",
        log_path: str = "sent.jsonl",
        fail_first: int = 0,
    ) -> None:
        self.usage = usage
        self.model = model
        self.service_tier = service_tier
        self.text = text
        self.log_path = log_path
        self.fail_first = fail_first
        self.router = respx.MockRouter(assert_all_called=False, base_url=BASE)
        self.router.post("/chat/completions").mock(side_effect=self._chat)
        self.router.post("/responses").mock(side_effect=self._responses)
        self.router.post("/embeddings").mock(side_effect=self._embeddings)
        self.router.post("/files").mock(side_effect=self._files)
        self.router.post("/batches").mock(side_effect=self._batches)
        self.router.route(host="myres.openai.azure.com").mock(side_effect=self._chat)

    def __enter__(self) -> OpenAIAPI:
        self.router.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.router.__exit__(*exc)

    def _log(self, request: httpx.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(request.content)
        except ValueError:
            body = None
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps({"url": str(request.url), "body": body}) + "\n")
        return body

    def _failing(self) -> httpx.Response | None:
        if self.fail_first > 0:
            self.fail_first -= 1
            return httpx.Response(500, json={"error": {"message": "overloaded", "type": "server_error"}})
        return None

    def _chat(self, request: httpx.Request) -> httpx.Response:
        body = self._log(request) or {}
        failing = self._failing()
        if failing is not None:
            return failing
        model = self.model or body.get("model")
        if body.get("stream"):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "service_tier": self.service_tier,
            }
            events: list[Any] = [
                {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                {**chunk, "choices": [{"index": 0, "delta": {"content": self.text}}]},
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append({**chunk, "choices": [], "usage": self.usage})
            events.append("[DONE]")
            return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})
        content = self.text
        if body.get("response_format", {}).get("type") == "json_schema":
            content = json.dumps({"answer": self.text})
        return httpx.Response(
            200,
            json={
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "service_tier": self.service_tier,
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": self.usage,
            },
        )

    def _response_object(self, model: str, status: str) -> dict[str, Any]:
        return {
            "id": "r1",
            "object": "response",
            "created_at": 1,
            "model": model,
            "status": status,
            "service_tier": self.service_tier,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": [
                {
                    "type": "message",
                    "id": "m1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": self.text, "annotations": []}],
                }
            ],
            "usage": self.usage if status == "completed" else None,
        }

    def _responses(self, request: httpx.Request) -> httpx.Response:
        body = self._log(request) or {}
        failing = self._failing()
        if failing is not None:
            return failing
        model = self.model or body.get("model")
        done = self._response_object(model, "completed")
        if body.get("stream"):
            events = [
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": self._response_object(model, "in_progress"),
                },
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 1,
                    "item_id": "m1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": self.text,
                    "logprobs": [],
                },
                {"type": "response.completed", "sequence_number": 2, "response": done},
            ]
            return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=done)

    def _embeddings(self, request: httpx.Request) -> httpx.Response:
        body = self._log(request) or {}
        return httpx.Response(
            200,
            json={
                "object": "list",
                "model": body.get("model"),
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": self.usage,
            },
        )

    def _files(self, request: httpx.Request) -> httpx.Response:
        self._log(request)
        return httpx.Response(
            200,
            json={
                "id": "file-batch1",
                "object": "file",
                "bytes": 10,
                "created_at": 1,
                "filename": "in.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def _batches(self, request: httpx.Request) -> httpx.Response:
        body = self._log(request) or {}
        return httpx.Response(
            200,
            json={
                "id": "batch_1",
                "object": "batch",
                "endpoint": body.get("endpoint"),
                "input_file_id": body.get("input_file_id"),
                "completion_window": "24h",
                "status": "validating",
                "created_at": 1,
            },
        )
