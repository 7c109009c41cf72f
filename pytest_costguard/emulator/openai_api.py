"""OpenAI's Chat Completions, Responses and Embeddings, as the emulator answers them.

The same deterministic replies as the Messages endpoint (`replies.reply_words`, markers included), billed in
OpenAI's terms: `prompt_tokens` / `input_tokens` are the whole input, `cached_tokens` the part of it read
from the cache, and output counts every generated token. Input counts `ceil(bytes / 4)` tokens of the text
the model reads plus 3 a message. Caching is automatic, as OpenAI's is: the longest prefix of a prompt (at a
message boundary, the whole prompt included) seen before on the same model is read from the cache, in whole
128-token blocks, once it reaches 1,024 tokens. A stream reports usage in a final chunk only when the request asks for
it (`stream_options.include_usage`), and Responses streams end with `response.completed`, usage included.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..domain.openai_request import Endpoint, output_limit, request_text
from .errors import ApiError
from .replies import reply_words
from .tokens import ceil4
from .wire import new_id

__all__ = ["MIN_CACHED_PROMPT", "OpenAIReply", "PrefixCache", "chat_events", "chat_json", "make_reply"]

MIN_CACHED_PROMPT = 1_024
"""OpenAI caches prompts of at least this many tokens (its prompt-caching guide), in 128-token increments."""
_CACHE_BLOCK = 128
_PER_MESSAGE = 3


class PrefixCache:
    """The prompt prefixes seen so far (at message boundaries), by model: what a later request reads cached."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def cached(self, model: str, texts: list[str], sizes: list[int]) -> int:
        """Return the cached part of a prompt of these messages (and token counts); remember its prefixes."""
        keys = [hashlib.sha256(json.dumps([model, texts[:i]]).encode()).hexdigest() for i in range(1, len(texts) + 1)]
        with self._lock:
            hit = max((i + 1 for i, key in enumerate(keys) if key in self._seen), default=0)
            self._seen.update(keys)
        prefix = sum(sizes[:hit])
        if prefix < MIN_CACHED_PROMPT:
            return 0
        return prefix // _CACHE_BLOCK * _CACHE_BLOCK

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


@dataclass(slots=True)
class OpenAIReply:
    """A reply about to be delivered, with what it bills."""

    endpoint: Endpoint
    model: str
    words: list[str]
    prompt_tokens: int
    cached_tokens: int
    finish: str
    """"stop", or "length" when the reply was cut at the request's limit."""

    @property
    def text(self) -> str:
        return "".join(self.words)

    def usage(self) -> dict[str, Any]:
        """The usage as the endpoint reports it."""
        out = len(self.words)
        if self.endpoint == "responses":
            return {
                "input_tokens": self.prompt_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.prompt_tokens + out,
            }
        if self.endpoint == "embeddings":
            return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": out,
            "total_tokens": self.prompt_tokens + out,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }


def _messages(body: Mapping[str, Any], endpoint: Endpoint) -> list[str]:
    """The texts of the prompt's messages, in order (instructions first for Responses)."""
    if endpoint == "chat":
        items = body.get("messages")
        if not isinstance(items, list) or not items:
            raise ApiError(400, "messages: must be a non-empty array")
        return [request_text({"messages": [m]}, "chat") for m in items]
    texts = [request_text({"instructions": body.get("instructions")}, "responses")] if body.get("instructions") else []
    source = body.get("input")
    if isinstance(source, list):
        texts += [request_text({"input": [item]}, "responses") for item in source]
    else:
        texts.append(request_text({"input": source}, "responses"))
    return texts


def make_reply(body: Mapping[str, Any], endpoint: Endpoint, cache: PrefixCache) -> OpenAIReply:
    """Answer a validated request deterministically and count what it bills (this writes the prefix cache)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: you must provide a model parameter")
    if endpoint == "embeddings":
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        tokens = sum(len(t) if isinstance(t, list) else ceil4(len(str(t).encode())) for t in texts)
        return OpenAIReply(endpoint, model, [], tokens, 0, "stop")
    texts = _messages(body, endpoint)
    sizes = [ceil4(len(text.encode())) + _PER_MESSAGE for text in texts]
    total = sum(sizes)
    cached = cache.cached(model, texts, sizes)
    last = texts[-1] if texts else ""
    words = reply_words({"model": model, "messages": [{"role": "user", "content": last}]})
    limit = output_limit(body, endpoint)
    finish = "stop"
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    return OpenAIReply(endpoint, model, words, total, cached, finish)


def chat_json(reply: OpenAIReply) -> dict[str, Any]:
    """A Chat Completions response."""
    return {
        "id": new_id("chatcmpl-", 24),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "finish_reason": reply.finish,
                "logprobs": None,
                "message": {"role": "assistant", "content": reply.text, "refusal": None},
            }
        ],
        "usage": reply.usage(),
    }


def chat_events(reply: OpenAIReply, *, include_usage: bool) -> Iterator[bytes]:
    """A Chat Completions stream: a chunk a word, the finish, usage when asked for, then `[DONE]`."""
    base = {"id": new_id("chatcmpl-", 24), "object": "chat.completion.chunk", "created": int(time.time())}
    base |= {"model": reply.model, "service_tier": "default"}
    first = {"role": "assistant", "content": ""}
    yield _data({**base, "choices": [{"index": 0, "delta": first, "finish_reason": None}]})
    for word in reply.words:
        yield _data({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
    yield _data({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish}]})
    if include_usage:
        yield _data({**base, "choices": [], "usage": reply.usage()})
    yield b"data: [DONE]\n\n"


def response_json(
    reply: OpenAIReply, *, status: str = "completed", ids: tuple[str, str] | None = None
) -> dict[str, Any]:
    """A Responses response object (`ids`: its own and its message's, the same in every event of a stream)."""
    done = status == "completed"
    response_id, message_id = ids or (new_id("resp_", 24), new_id("msg_", 24))
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": reply.model,
        "status": status if reply.finish == "stop" or not done else "incomplete",
        "service_tier": "default",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [
            {
                "type": "message",
                "id": message_id,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text if done else "", "annotations": []}],
            }
        ]
        if done
        else [],
        "usage": reply.usage() if done else None,
    }


def response_events(reply: OpenAIReply) -> Iterator[bytes]:
    """A Responses stream: created, a text delta a word, then completed (or incomplete) with usage."""
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return f"event: {kind}\n".encode() + _data({"type": kind, "sequence_number": sequence, **fields})

    ids = (new_id("resp_", 24), new_id("msg_", 24))
    final = response_json(reply, ids=ids)
    item = final["output"][0]
    where = {"item_id": item["id"], "output_index": 0}
    yield event("response.created", response=response_json(reply, status="in_progress", ids=ids))
    yield event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.content_part.added", **where, content_index=0, part=part)
    for word in reply.words:
        yield event("response.output_text.delta", **where, content_index=0, delta=word, logprobs=[])
    yield event("response.output_text.done", **where, content_index=0, text=reply.text, logprobs=[])
    yield event("response.content_part.done", **where, content_index=0, part=item["content"][0])
    yield event("response.output_item.done", output_index=0, item=item)
    yield event("response.completed" if final["status"] == "completed" else "response.incomplete", response=final)


def embeddings_json(reply: OpenAIReply, body: Mapping[str, Any]) -> dict[str, Any]:
    """An Embeddings response: one small deterministic vector an input."""
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    return {
        "object": "list",
        "model": reply.model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]} for i in range(count)],
        "usage": reply.usage(),
    }


def _data(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
