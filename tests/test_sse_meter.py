"""The stream meter reads only the events that carry usage, and reads them exactly as a full parser would.

`SSEMeter` skips every event that does not name `message_start`, `message_delta` or `error` without decoding
it. These tests hold it to a reference that splits the stream into events and parses every one of them, over
streams with every separator SSE allows, multi-line data, extra fields, comments, text that happens to name
those events, and every way of cutting the bytes into chunks.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from pytest_costguard.providers.anthropic.middleware import SSEMeter


def reference(raw: bytes) -> tuple[dict[str, Any] | None, str | None, bool, bool]:
    """Parse every event of a whole stream: (usage dict, model, complete, error), the meter's old way."""
    usage: dict[str, Any] | None = None
    model = None
    complete = error = False
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for block in text.split(b"\n\n"):
        data = b"".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
        if not data:
            continue
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("type") == "message_start":
            message = event.get("message") or {}
            model = message.get("model") or model
            if isinstance(message.get("usage"), dict):
                usage = dict(message["usage"])
        elif event.get("type") == "message_delta" and isinstance(event.get("usage"), dict):
            usage = {**(usage or {}), **{k: v for k, v in event["usage"].items() if v is not None}}
            complete = True
        elif event.get("type") == "error":
            error = True
    return usage, model, complete, error


def event(payload: dict[str, Any], *, name: bool = True, newline: str = "\n", extra: str = "") -> str:
    head = f"event: {payload['type']}{newline}" if name else ""
    return f"{head}data: {json.dumps(payload)}{newline}{extra}{newline}"


START_USAGE = {"input_tokens": 11, "output_tokens": 1}


def stream(newline: str = "\n", *, text: str = "hello", tail: list[str] | None = None, name: bool = True) -> bytes:
    nl = newline
    parts = [
        f": a comment{nl}{nl}",
        event(
            {"type": "message_start", "message": {"model": "claude-x", "usage": START_USAGE}},
            newline=nl,
            name=name,
        ),
        event({"type": "ping"}, newline=nl, name=name),
        event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            newline=nl,
            name=name,
            extra=f"id: 7{nl}",
        ),
        event({"type": "message_delta", "usage": {"output_tokens": 4, "input_tokens": None}}, newline=nl, name=name),
        event({"type": "message_stop"}, newline=nl, name=name),
        *(tail or []),
    ]
    return "".join(parts).encode()


def observed(meter: SSEMeter) -> tuple[dict[str, Any] | None, str | None, bool, bool]:
    usage = meter.usage
    as_dict = None if usage is None else {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    return as_dict, meter.model, meter.complete, meter.error


def expected(raw: bytes) -> tuple[dict[str, Any] | None, str | None, bool, bool]:
    usage, model, complete, error = reference(raw)
    as_dict = None
    if usage is not None:
        as_dict = {"input_tokens": usage.get("input_tokens") or 0, "output_tokens": usage.get("output_tokens") or 0}
    return as_dict, model, complete, error


MULTILINE_START = (
    'event: message_start\ndata: {"type": "message_start",\ndata: "message": {"model": "m2", '
    '"usage": {"input_tokens": 5, "output_tokens": 1}}}\n\n'
    'data: {"type": "message_delta", "usage": {"output_tokens": 8}}\n\n'
)
STREAMS = {
    "lf": stream("\n"),
    "crlf": stream("\r\n"),
    "cr": stream("\r"),
    "no event lines": stream(name=False),
    "text naming the events": stream(text="message_delta error message_start message_"),
    "error event": stream(tail=[event({"type": "error", "error": {"type": "overloaded_error"}})]),
    "cut before message_delta": stream().split(b"event: message_delta")[0],
    "multi-line data": MULTILINE_START.encode(),
    "not json": b"event: message_start\ndata: {not json\n\n" + stream(),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_meter_matches_a_parser_of_every_event_whole_and_in_chunks(name: str) -> None:
    raw = STREAMS[name]
    want = expected(raw)
    whole = SSEMeter()
    whole.feed(raw)
    assert observed(whole) == want
    for cut in range(len(raw) + 1):
        meter = SSEMeter()
        meter.feed(raw[:cut])
        meter.feed(raw[cut:])
        assert observed(meter) == want, (name, cut)


def test_the_meter_reads_streams_cut_into_many_random_chunks_like_a_full_parser() -> None:
    rng = random.Random(19)
    for name, raw_bytes in sorted(STREAMS.items()):
        want = expected(raw_bytes)
        for _ in range(60):
            cuts = sorted(rng.sample(range(1, len(raw_bytes)), k=min(8, len(raw_bytes) - 1)))
            meter = SSEMeter()
            for start, stop in itertools.pairwise([0, *cuts, len(raw_bytes)]):
                meter.feed(raw_bytes[start:stop])
            assert observed(meter) == want, (name, cuts)


def test_the_expected_figures_are_the_streams_own() -> None:
    # The reference is not vacuous: the LF stream reports its start's input and its delta's output.
    assert expected(STREAMS["lf"]) == ({"input_tokens": 11, "output_tokens": 4}, "claude-x", True, False)
    assert expected(STREAMS["error event"])[3] is True
    assert expected(STREAMS["cut before message_delta"])[2] is False
    assert expected(STREAMS["multi-line data"]) == ({"input_tokens": 5, "output_tokens": 8}, "m2", True, False)


def test_only_what_follows_the_last_complete_event_is_kept_between_chunks() -> None:
    meter = SSEMeter()
    delta = event({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x" * 500}}).encode()
    for _ in range(200):
        meter.feed(delta)
    meter.feed(delta[:40])
    assert len(meter._tail) == 40  # a long stream leaves no buffer behind it, only the event in progress
