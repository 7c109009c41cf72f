"""A small help-desk app and emulator controls, copied into the inner pytest runs of test_e2e.py.

The app is written the way production code is: it builds its own `anthropic.Anthropic()` /
`anthropic.AsyncAnthropic()` clients, which read ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY from the
environment, and it lets SDK errors propagate. The emulator controls talk to its `/_emulator/*` endpoints
over urllib, which the plugin does not meter.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from typing import Any

import anthropic

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 64
"""Above every emulator reply (8 to 31 tokens), so a complete reply ends with "end_turn"."""
SYSTEM = (
    "You are the help desk of a small accounting software company. Answer the customer's question in two "
    "short sentences, politely, and never promise refunds or release dates."
)


def _request(question: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": question}],
    }


def answer(question: str, *, max_tokens: int = MAX_TOKENS, timeout: float = 30.0) -> Any:
    """Answer one question (`messages.create`); return the SDK's Message."""
    with anthropic.Anthropic(timeout=timeout) as client:
        return client.messages.create(**_request(question, max_tokens))


def answer_streaming(question: str, *, max_tokens: int = MAX_TOKENS) -> tuple[str, str | None]:
    """Stream an answer with `messages.stream`; return its text and the final stop reason."""
    with anthropic.Anthropic() as client, client.messages.stream(**_request(question, max_tokens)) as stream:
        text = "".join(stream.text_stream)
        return text, stream.get_final_message().stop_reason


def answer_raw_stream(question: str) -> list[str]:
    """Stream an answer with `create(stream=True)`; return the event types received."""
    with anthropic.Anthropic() as client, client.messages.create(**_request(question), stream=True) as stream:
        return [event.type for event in stream]


def first_words(question: str, *, max_tokens: int = MAX_TOKENS) -> str:
    """Stream an answer but keep only its first piece, closing the stream early (a preview)."""
    with anthropic.Anthropic() as client, client.messages.stream(**_request(question, max_tokens)) as stream:
        for text in stream.text_stream:
            return text
    return ""


async def answer_all(questions: list[str], *, max_tokens: int = MAX_TOKENS) -> list[str]:
    """Answer many questions concurrently with one AsyncAnthropic client.

    Every request is awaited before the client closes, even when one fails; then the first failure is raised.
    """
    async with anthropic.AsyncAnthropic() as client:
        results = await asyncio.gather(
            *(client.messages.create(**_request(q, max_tokens)) for q in questions), return_exceptions=True
        )
    answers = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        answers.append(result.content[0].text)
    return answers


async def stream_all(questions: list[str]) -> list[tuple[str, str | None]]:
    """Stream answers to many questions concurrently; return each one's text and final stop reason."""

    async def one(client: anthropic.AsyncAnthropic, question: str) -> tuple[str, str | None]:
        async with client.messages.stream(**_request(question)) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            return text, (await stream.get_final_message()).stop_reason

    async with anthropic.AsyncAnthropic() as client:
        return list(await asyncio.gather(*(one(client, q) for q in questions)))


# -- emulator controls --------------------------------------------------------------------------------------
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


def _control(method: str, path: str, payload: Any = None) -> Any:
    url = os.environ["ANTHROPIC_BASE_URL"].rstrip("/") + path
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with _opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def queue_fault(kind: str, times: int = 1, **params: Any) -> None:
    """Make the next `times` Messages requests fail with `kind`."""
    _control("POST", "/_emulator/faults", {"faults": [{"kind": kind, "times": times, **params}]})


def pending_faults() -> list[dict[str, Any]]:
    """The faults still queued, with how many requests each will still fail."""
    return list(_control("GET", "/_emulator/faults")["faults"])


def clear_faults() -> None:
    """Drop every queued fault."""
    _control("DELETE", "/_emulator/faults")


def billed() -> list[dict[str, Any]]:
    """The emulator's billing ledger: one entry per response that delivered a message."""
    return list(_control("GET", "/_emulator/billed"))


def wait_for_billed(count: int, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Wait until the ledger holds `count` entries (a timed-out attempt is billed when its delay ends)."""
    deadline = time.monotonic() + timeout
    entries = billed()
    while len(entries) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        entries = billed()
    return entries
