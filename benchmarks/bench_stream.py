"""Streamed calls: `messages.create(stream=True)` and `messages.stream()` metered against the same calls bare.

The SDK talks to an `httpx2.MockTransport` that serves a realistic Messages event stream of 21 SSE events
(`message_start`, `content_block_start`, `ping`, 15 `content_block_delta`s, `content_block_stop`,
`message_delta`, `message_stop`), one event per chunk as a server flushes them, so the meter sees what it
sees over a real connection. The *bare* client is built before `pytest_costguard` is imported (no middleware
at all); the *metered* client is built with a `CostGuard` over `InMemoryLedger(limit=1000)` installed. Blocks
of calls alternate between them, reversing the order every round; each figure is the median of the per-round
ratios. Every call reads the whole stream, as a caller printing the reply would.

Run: python benchmarks/bench_stream.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from _bench import figure, fmt_time, make_parser, median, time_alternating

MODEL = "claude-sonnet-4-6"
MESSAGES = [{"role": "user", "content": "Summarise the ticket: the printer on floor 3 is out of toner again."}]
TEXT = "The printer on floor three is out of toner again; facilities were told and a cartridge is on its way"


def sse_events() -> list[bytes]:
    """The 21 events of a short streamed reply, each encoded as the API sends it (`event:` and `data:` lines)."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bench",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 24,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "service_tier": "standard",
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    words = TEXT.split()
    pieces = [" ".join(words[i : i + 1]) + " " for i in range(15)]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}} for text in pieces
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    ]
    assert len(events) == 21, len(events)
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


EVENTS = sse_events()


def make_client(bare: bool = False, middleware: list[Any] | None = None) -> Any:
    """An SDK client whose transport streams `EVENTS`, one chunk per event, in memory.

    `bare`: a client the plugin never meters. Once a guard is installed, clients built before it are metered
    too (through their `request`), so the baseline keeps the SDK's own `request`, taken before the plugin is
    imported. `middleware`: the client's own (`bench_instructions.py` passes a do-nothing one).
    """
    import anthropic
    import httpx2

    def answer(request: Any) -> Any:
        return httpx2.Response(200, content=iter(EVENTS), headers={"content-type": "text/event-stream"})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    if bare:
        from anthropic._base_client import SyncAPIClient

        class Bare(anthropic.Anthropic):
            request = SyncAPIClient.request  # the SDK's own: read before pytest_costguard wraps it

        return Bare(api_key="bench", http_client=http, max_retries=0, middleware=middleware)
    return anthropic.Anthropic(api_key="bench", http_client=http, max_retries=0, middleware=middleware)


def create_block(client: Any, calls: int) -> Callable[[], float]:
    """Time `calls` calls of `create(stream=True)`, each iterated to its end; seconds per call."""

    def run() -> float:
        create = client.messages.create
        start = time.perf_counter()
        for _ in range(calls):
            for _event in create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True):
                pass
        return (time.perf_counter() - start) / calls

    return run


def helper_block(client: Any, calls: int) -> Callable[[], float]:
    """Time `calls` calls of the `messages.stream()` helper, its text read to the end; seconds per call."""

    def run() -> float:
        stream = client.messages.stream
        start = time.perf_counter()
        for _ in range(calls):
            with stream(model=MODEL, max_tokens=256, messages=MESSAGES) as s:
                for _text in s.text_stream:
                    pass
        return (time.perf_counter() - start) / calls

    return run


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    quick = args.quick
    bare = make_client(bare=True)  # before pytest_costguard is imported: no middleware, never metered
    assert not bare.middleware, "the bare client must carry no middleware"

    from pytest_costguard.metering.guard import CostGuard, GuardConfig
    from pytest_costguard.metering.ledger import InMemoryLedger
    from pytest_costguard.providers import anthropic as provider

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1000)))
    provider.install(guard)
    metered = make_client()
    from pytest_costguard.providers.anthropic.patch import middleware_chain

    chain = middleware_chain(metered)  # ours included: `metered.middleware` leaves it out
    assert [type(m).__name__ for m in chain] == ["CostGuardMiddleware"], chain

    calls = 10 if quick else 40
    rounds = 3 if quick else 60
    times = time_alternating(
        {
            "create_bare": create_block(bare, calls),
            "create_metered": create_block(metered, calls),
            "helper_bare": helper_block(bare, calls),
            "helper_metered": helper_block(metered, calls),
        },
        rounds,
    )
    provider.uninstall(guard)
    expected = 2 * (rounds + 1) * calls  # the warm-up round counts too
    records = guard.records
    assert len(records) == expected, (len(records), expected)
    assert all(r.streamed and not r.estimated and r.output_tokens == 15 for r in records), records[-1]
    assert guard.ledger.reserved == 0

    for name, label in (("create", "create(stream=True)"), ("helper", "messages.stream()")):
        ratios = [m / b for m, b in zip(times[f"{name}_metered"], times[f"{name}_bare"], strict=True)]
        ratio = median(ratios)
        spread = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio, ratio, ratio]
        metered_t, bare_t = median(times[f"{name}_metered"]), median(times[f"{name}_bare"])
        figure(
            f"stream.{name}",
            f"{label}, {len(EVENTS)} SSE events: metered {fmt_time(metered_t)}/call vs bare {fmt_time(bare_t)}/call: "
            f"ratio {ratio:.3f} ({fmt_time(metered_t - bare_t)}/call more; median of {rounds} paired blocks of "
            f"{calls} calls, interquartile {spread[0]:.3f}-{spread[2]:.3f})",
            met=ratio <= 1.10,
            target="<= 1.10, bar 1.15",
            quick=quick,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
