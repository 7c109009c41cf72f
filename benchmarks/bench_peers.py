"""Side by side with peers: the per-call cost of pytest-costguard's meter against other ways to observe an SDK call.

One process, one run: every variant makes the same `messages.create` through the real `anthropic` SDK to an
`httpx2.MockTransport` that answers bench_overhead's canned Messages response, so what differs between
them is only what each observer adds to a call. Variants (blocks of calls, interleaved, the order reversed
every round; each figure is the median of its per-round ratios to bare, as `_bench.paired_ratio` takes it):

- bare: a default client built before anything else is imported (bench_overhead's `make_client`). Its
  `open_telemetry` option is unset, so the SDK starts a (non-recording) span on the global, no-op tracer
  for every call: that is what an unmetered user gets, and what every ratio here is taken against.
- tracing_off: the same client with `open_telemetry=False` (info): what that no-op span costs the baseline,
  and pytest-costguard's ratio against the SDK's fastest call.
- pytest-costguard: bench_overhead's metered client (`metered_setup`), guard installed around its blocks.
- anthropic_otel: the SDK's own OpenTelemetry spans (`open_telemetry={"tracer_provider": ...}`), into an
  opentelemetry-sdk `TracerProvider` with an in-memory exporter.
- otel_instrumentation_anthropic: `AnthropicInstrumentor().instrument(tracer_provider=...)`, same exporter
  kind; instrumented only around its own blocks, because it wraps the SDK's classes for every client.
- logfire: `logfire.configure(local=True, send_to_logfire=False, console=False)` (local: it must not become
  the global tracer provider, which every other variant's default client would then record spans into) and
  `instrument_anthropic(client)` on its own client; spans go to an in-memory exporter too.
- litellm_completion_cost: the bare client, plus `litellm.completion_cost(completion_response=message)` on
  each response: what pricing a call with LiteLLM costs.

A peer that is not installed prints "not installed"; one that fails to import, to instrument the client or
to observe a probe call prints "does not work" with the error, and the others are still measured. Every
peer's spans (or prices) are counted after the run, so a peer that silently stopped observing calls is
reported as such, not as cheap.

Run: python benchmarks/bench_peers.py [--quick]
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import inspect
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _bench import figure, fmt_time, make_parser, median, paired_ratio, time_alternating
from bench_overhead import MESSAGES, MODEL, call_block, make_client, metered_setup

TARGET = 1.15
"""The bar pytest-costguard's per-call ratio to bare is held to here."""


@dataclass(frozen=True)
class Peer:
    """A package that observes or prices an SDK call, measured against the bare call."""

    key: str
    """The figure key's last part: `peers.<key>`."""
    label: str
    """What is measured, for the figure line."""
    modules: tuple[str, ...]
    """Modules that must be importable (checked without importing them) for the peer to count as installed."""
    dists: tuple[str, ...]
    """Distributions whose versions the figure line names."""
    setup: Callable[[int], Variant]
    """Import the peer, build its client and return its variant for blocks of this many calls (may raise)."""
    quick: bool = True
    """Whether it runs in quick mode (False: its import alone would take the quick run's whole budget)."""


@dataclass(frozen=True)
class Variant:
    """One peer, ready to time."""

    block: Callable[[], float]
    """Times a block of calls; seconds per call."""
    observed: Callable[[], int]
    """How many calls the peer has observed (spans exported, responses priced) since its setup."""
    note: str = ""
    """Anything the figure line should add (what a call was priced at)."""


def installed(peer: Peer) -> bool:
    """Return whether every module the peer needs can be found (cheap: nothing is imported but parents)."""
    for name in peer.modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):  # a missing parent package, or a broken install
            return False
    return True


def versions(peer: Peer) -> str:
    found = []
    for dist in peer.dists:
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} (no metadata)")
    return ", ".join(found)


def memory_provider() -> tuple[Any, Any]:
    """Return an opentelemetry-sdk tracer provider exporting synchronously to memory, and its exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def counted(timed: Callable[[], float], exporter: Any) -> tuple[Callable[[], float], Callable[[], int]]:
    """Wrap a block so the spans it exported are counted and dropped after it (outside the timed window).

    Dropped so the exporter's list does not grow over the run; counted so a peer that stopped making
    spans is caught.
    """
    total = [0]

    def block() -> float:
        seconds = timed()
        total[0] += len(exporter.get_finished_spans())
        exporter.clear()
        return seconds

    return block, lambda: total[0]


def probe(client: Any) -> None:
    """Make one call, outside any timing: a peer that breaks the SDK call fails here, at setup."""
    client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)


def anthropic_otel(calls: int) -> Variant:
    import anthropic

    if "open_telemetry" not in inspect.signature(anthropic.Anthropic.__init__).parameters:
        raise RuntimeError(f"anthropic {anthropic.__version__} has no `open_telemetry` client option")
    provider, exporter = memory_provider()
    client = make_client(open_telemetry={"tracer_provider": provider})
    probe(client)
    if len(exporter.get_finished_spans()) != 1:
        raise RuntimeError(f"a probe call exported {len(exporter.get_finished_spans())} spans, not 1")
    exporter.clear()
    block, observed = counted(call_block(client, calls), exporter)
    return Variant(block, observed)


def otel_instrumentation_anthropic(calls: int) -> Variant:
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    provider, exporter = memory_provider()
    instrumentor = AnthropicInstrumentor()
    client = make_client()
    instrumentor.instrument(tracer_provider=provider)
    try:
        probe(client)
    finally:
        instrumentor.uninstrument()
    if len(exporter.get_finished_spans()) != 1:
        raise RuntimeError(f"a probe call exported {len(exporter.get_finished_spans())} spans, not 1")
    exporter.clear()
    timed = call_block(client, calls)

    def instrumented() -> float:
        # It wraps the SDK's resource classes, which every client shares: the other variants must not see it.
        instrumentor.instrument(tracer_provider=provider)
        try:
            return timed()
        finally:
            instrumentor.uninstrument()

    block, observed = counted(instrumented, exporter)
    return Variant(block, observed)


def logfire_anthropic(calls: int) -> Variant:
    import logfire
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    instance = logfire.configure(
        local=True, send_to_logfire=False, console=False, additional_span_processors=[SimpleSpanProcessor(exporter)]
    )
    client = make_client()
    instance.instrument_anthropic(client)  # this client only: its return value (an uninstrumenter) is not needed
    probe(client)
    if len(exporter.get_finished_spans()) != 1:
        raise RuntimeError(f"a probe call exported {len(exporter.get_finished_spans())} spans, not 1")
    exporter.clear()
    block, observed = counted(call_block(client, calls), exporter)
    return Variant(block, observed)


def litellm_completion_cost(calls: int) -> Variant:
    # Without it, importing litellm fetches its price list from GitHub (over a network this machine lacks).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    client = make_client()
    prices: list[float] = []

    def price(message: Any) -> None:
        prices.append(litellm.completion_cost(completion_response=message))

    price(client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES))
    if not prices[0] > 0:
        raise RuntimeError(f"completion_cost priced a probe call at {prices[0]!r}")
    first = prices[0]
    timed = call_block(client, calls, after=price)
    total = [0]

    def priced() -> float:
        seconds = timed()
        # Counted and dropped outside the timed window; the probe's price stays first, for the figure line.
        total[0] += len(prices) - 1
        del prices[1:]
        return seconds

    return Variant(priced, lambda: total[0], note=f"prices the call at ${first:.6f}")


PEERS = (
    Peer(
        "anthropic_otel",
        "the SDK's own OpenTelemetry spans, to an in-memory exporter",
        ("opentelemetry.sdk",),
        ("anthropic", "opentelemetry-sdk"),
        anthropic_otel,
    ),
    Peer(
        "otel_instrumentation_anthropic",
        "AnthropicInstrumentor, to an in-memory exporter",
        ("opentelemetry.instrumentation.anthropic", "opentelemetry.sdk"),
        ("opentelemetry-instrumentation-anthropic", "opentelemetry-sdk"),
        otel_instrumentation_anthropic,
    ),
    Peer(
        "logfire",
        "logfire.instrument_anthropic(client), send_to_logfire=False, console=False",
        ("logfire", "opentelemetry.sdk"),
        ("logfire",),
        logfire_anthropic,
    ),
    Peer(
        "litellm_completion_cost",
        "bare call + litellm.completion_cost(completion_response=message)",
        ("litellm",),
        ("litellm",),
        litellm_completion_cost,
        quick=False,
    ),
)


def installed_peers() -> list[Peer]:
    """Return the peers this environment has (run_all.py skips this script when there are none)."""
    return [peer for peer in PEERS if installed(peer)]


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    quick: bool = args.quick
    # As overhead.inprocess: many short blocks, so a burst of load spoils a few pairs and the median drops them.
    calls = 5 if quick else 50
    rounds = 2 if quick else 80

    # Before any peer or pytest_costguard is imported: this client carries nothing but the SDK's defaults.
    bare = make_client()
    assert not bare.middleware, "the bare client must carry no middleware"
    probe(bare)
    tracing_off = make_client(open_telemetry=False)

    variants: dict[str, Variant] = {}
    notes: dict[str, str] = {}  # peer key -> why it has no ratio
    for peer in PEERS:
        if not installed(peer):
            notes[peer.key] = f"not installed (pip install -e '.[peers]'; needs {', '.join(peer.modules)})"
        elif quick and not peer.quick:
            notes[peer.key] = f"{versions(peer)}: installed, skipped in quick mode (its import alone takes seconds)"
        else:
            try:
                variants[peer.key] = peer.setup(calls)
            except Exception as error:  # any failure of a peer is a finding to print, never a crash
                notes[peer.key] = f"{versions(peer)}: does not work here: {one_line(error)}"

    # Last: once pytest_costguard has patched the SDK's constructor, every client built carries its middleware.
    metered = metered_setup(calls)
    # The peers' imports (litellm's above all) add a large heap; frozen, a full collection in one block costs
    # what it costs in the others instead of scanning every import's objects.
    gc.collect()
    gc.freeze()

    blocks: dict[str, Callable[[], float]] = {
        "bare": call_block(bare, calls),
        "costguard": metered.block,
        "tracing_off": call_block(tracing_off, calls),
        **{key: variant.block for key, variant in variants.items()},
    }
    times = time_alternating(blocks, rounds)
    expected = (rounds + 1) * calls  # the warm-up round counts too
    metered.check(expected)

    bare_t = median(times["bare"])

    def measured(name: str) -> str:
        ratios = [v / b for v, b in zip(times[name], times["bare"], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        return (
            f"{fmt_time(median(times[name]))}/call vs bare {fmt_time(bare_t)}/call: "
            f"ratio {paired_ratio(times[name], times['bare']):.3f} "
            f"(median of {rounds} paired blocks of {calls} calls, interquartile {quartiles[0]:.3f}-{quartiles[2]:.3f})"
        )

    import anthropic

    print(f"peers: anthropic {anthropic.__version__}, {len(variants)} of {len(PEERS)} peers measured", flush=True)
    ratio = paired_ratio(times["costguard"], times["bare"])
    figure(
        "peers.costguard",
        f"pytest-costguard metered {measured('costguard')}",
        met=ratio <= TARGET,
        target=f"<= {TARGET}",
        quick=quick,
    )
    figure(
        "peers.tracing_off",
        f"bare with open_telemetry=False {measured('tracing_off')}; against it, pytest-costguard's ratio is "
        f"{paired_ratio(times['costguard'], times['tracing_off']):.3f} (info: the SDK's no-op span is in every "
        "other figure's baseline)",
    )
    ratios = {"pytest-costguard": ratio}
    for peer in PEERS:
        key = f"peers.{peer.key}"
        if peer.key in notes:
            figure(key, notes[peer.key])
            continue
        variant = variants[peer.key]
        seen = variant.observed()
        if seen != expected:
            figure(key, f"{versions(peer)}: does not work here: observed {seen} of {expected} calls")
            continue
        ratios[peer.key] = paired_ratio(times[peer.key], times["bare"])
        note = f"; {variant.note}" if variant.note else ""
        figure(key, f"{versions(peer)}: {peer.label}: {measured(peer.key)}{note} (info)")
    ranked = sorted(ratios.items(), key=lambda item: item[1])
    verdict = "is" if ranked[0][0] == "pytest-costguard" else "is not"
    figure(
        "peers.ranking",
        ", ".join(f"{name} {value:.3f}" for name, value in ranked)
        + f" (ratio to bare, cheapest first; pytest-costguard {verdict} the cheapest of the {len(ranked)} measured)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
