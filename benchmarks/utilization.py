"""Budget utilization of a media-heavy suite: how much of its budget it spends before its first refusal.

A fixed, deterministic sequence of Messages calls (inline PDFs, images, a PDF by URL, a text document by
`file_id`, computer-use tools, web fetch with and without limits, custom tools) is sent to the emulator through
a metered client, under a budget, until the first call is refused. Utilization is what the emulator billed
divided by the budget. Each preflight mode runs the same sequence side by side in one process:

* `auto` (the default): calls with media, documents or tools are counted with `count_tokens` first.
* `off`: every call is admitted at its safe local bound (images at the per-image maximum, documents by
  reference at the context window, built-in tools at their rounded-up overheads).

No figure has a target: the point is the ratio between the modes and that billed never exceeds the budget.

`measure_run` runs the same workload as a pytest run under `--llm-budget` (in a subprocess, the plugin metering
an ordinary client), opening with a Message Batch of media requests, optionally behind a gateway that answers
every request with a pricier model than the one asked for: it checks that a run bills no more than its budget
unless it overspent, and that a run that refused or overspent exits non-zero.

Run: python benchmarks/utilization.py [--budget USD] [--runs]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["RunUtilization", "Utilization", "measure", "measure_run", "media_requests"]

MODEL = "claude-haiku-4-5"
FILE_ID = "file_costguard_doc"
FILE_BYTES = b"A plain text document read by file_id. " * 1_500  # ~58 kB: ~14.6k tokens on the emulator


def _png(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR"
    return base64.b64encode(header + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\0\0\0").decode()


def _pdf(pages: list[str]) -> str:
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()]
    for i, text in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /Contents {4 + 2 * i} 0 R >>".encode())
        objects.append(b"<< >>\nstream\nBT (" + text.encode() + b") Tj ET\nendstream")
    body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj\n%s\nendobj\n" % (i + 1, o) for i, o in enumerate(objects))
    return base64.b64encode(body + b"%%EOF").decode()


def _ask(content: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, text: str) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": [*content, {"type": "text", "text": text}]}],
    }
    if tools:
        request["tools"] = tools
    return request


def media_requests() -> Iterator[dict[str, Any]]:
    """The scenario's calls, in order, endlessly (each round differs a little, so no two are the same)."""
    computer = [
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    lookup = {"name": "lookup", "description": "find a record", "input_schema": {"type": "object"}}
    for n in itertools.count():
        yield _ask([_document_b64(_pdf([f"page {p} of report {n}" for p in range(12)]))], text=f"summarise {n}")
        yield _ask([_image(_png(640 + n, 480)), _image(_png(200, 150))], text=f"compare the two pictures {n}")
        yield _ask([_document_url(f"https://example.com/annual-{n}.pdf#pages=8")], text=f"key figures {n}")
        yield _ask([{"type": "document", "source": {"type": "file", "file_id": FILE_ID}}], text=f"quote it {n}")
        yield _ask([], tools=computer, text=f"open the settings window {n}")
        fetch = {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 1, "max_content_tokens": 4_000}
        yield _ask([], tools=[fetch, lookup], text=f"read https://example.com/{n} [[costguard:web_fetch=1]]")
        yield _ask([_image(_png(1920, 1080))], tools=[lookup], text=f"what does the screenshot show {n}")


def _image(data: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def _document_b64(data: str) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}


def _document_url(url: str) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "url", "url": url}}


@dataclass(frozen=True)
class Utilization:
    """One run of the scenario until its first refusal."""

    mode: str
    budget: Decimal
    billed: Decimal
    """What the emulator billed (its own ledger, priced with genai-prices)."""
    recorded: Decimal
    """What the guard recorded."""
    calls: int
    """Calls billed before the first refusal."""
    preflights: int

    @property
    def share(self) -> Decimal:
        """Billed / budget."""
        return self.billed / self.budget


def measure(mode: str, budget: Decimal, *, max_calls: int = 10_000) -> Utilization:
    """Run the scenario against a fresh emulator under `budget` with preflight `mode` until the first refusal."""
    import anthropic

    from pytest_costguard import BudgetExceededError, CostGuard, GuardConfig, InMemoryLedger, PriceBook
    from pytest_costguard.core.pricing import usage_from_response
    from pytest_costguard.emulator import Emulator
    from pytest_costguard.providers.anthropic.middleware import middleware_for

    guard = CostGuard(GuardConfig(preflight=mode), InMemoryLedger(limit=budget))  # type: ignore[arg-type]
    with Emulator() as emulator:
        emulator.files[FILE_ID] = FILE_BYTES
        with anthropic.Anthropic(
            base_url=emulator.base_url, api_key="k", max_retries=0, middleware=[middleware_for(guard)]
        ) as sdk:
            for request in itertools.islice(media_requests(), max_calls):
                try:
                    sdk.messages.create(**request)
                except BudgetExceededError:
                    break
        book = PriceBook()
        billed = sum((book.cost(usage_from_response(e["usage"]), e["model"]) for e in emulator.billed), Decimal(0))
        calls = len(emulator.billed)
    return Utilization(mode, budget, billed, guard.total_cost, calls, guard.preflight_calls)


GATEWAY_MODEL = "claude-sonnet-4-5"
"""What the gateway answers with: 3x haiku 4.5's prices."""
BATCH_SIZE = 7
"""The opening batch: one round of `media_requests`."""

_SUITE = """
import itertools
import json
import sys

import anthropic
import httpx2
import pytest

sys.path.insert(0, BENCHMARKS)
from utilization import BATCH_SIZE, FILE_BYTES, FILE_ID, media_requests

from pytest_costguard import BudgetExceededError
from pytest_costguard.emulator import Emulator


class Gateway(httpx2.BaseTransport):
    \"\"\"Forwards to the emulator, answering every request (and every request of a batch) with MODEL.\"\"\"

    def __init__(self) -> None:
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if MODEL and request.method == "POST" and not request.url.path.endswith("/count_tokens"):
            body = json.loads(request.read())
            if "requests" in body:
                for item in body["requests"]:
                    item["params"]["model"] = MODEL
            else:
                body["model"] = MODEL
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx2.Request(request.method, request.url, headers=headers, json=body)
        return self.inner.handle_request(request)


def test_media_heavy_workload():
    with Emulator() as emulator:
        emulator.files[FILE_ID] = FILE_BYTES
        sdk = anthropic.Anthropic(
            base_url=emulator.base_url, api_key="k", max_retries=0, http_client=httpx2.Client(transport=Gateway())
        )
        requests = media_requests()
        batched = [{"custom_id": f"r{i}", "params": p} for i, p in enumerate(itertools.islice(requests, BATCH_SIZE))]
        outcome = {"batch": "refused", "calls": 0, "refused": False}
        try:
            try:
                batch = sdk.messages.batches.create(requests=batched)
                for _ in sdk.messages.batches.results(batch.id):
                    pass
                outcome["batch"] = "billed"
            except BudgetExceededError:
                pass
            for request in itertools.islice(requests, MAX_CALLS):
                try:
                    sdk.messages.create(**request)
                except BudgetExceededError:
                    outcome["refused"] = True
                    break
                outcome["calls"] += 1
        finally:
            sdk.close()
            with open("billed.json", "w") as out:
                json.dump({"billed": emulator.billed, **outcome}, out)
"""


@dataclass(frozen=True)
class RunUtilization:
    """One pytest run of the workload (a batch first, then calls until the first refusal)."""

    mode: str
    budget: Decimal
    gateway: str | None
    """The model the gateway answered with, or None (answered as asked)."""
    billed: Decimal
    recorded: Decimal
    """What the run's report says it spent."""
    calls: int
    batch_billed: bool
    refused: bool
    overspent: Decimal
    exit_code: int

    @property
    def share(self) -> Decimal:
        return self.billed / self.budget

    def problems(self) -> list[str]:
        """What breaks the budget's promises: an overspend not flagged, a failing run that exits 0."""
        found = []
        if self.billed > self.budget and self.overspent <= 0:
            found.append(f"billed ${self.billed} over the ${self.budget} budget without reporting an overspend")
        if (self.refused or self.overspent > 0 or self.billed > self.budget) and self.exit_code == 0:
            found.append("refused or overspent, yet exited 0")
        if self.recorded != self.billed:
            found.append(f"recorded ${self.recorded} but billed ${self.billed}")
        return found


def measure_run(mode: str, budget: Decimal, *, gateway: str | None = None, max_calls: int = 10_000) -> RunUtilization:
    """Run the workload as `pytest --llm-budget=budget --llm-preflight=mode` in a subprocess and read its bill."""
    from pytest_costguard import PriceBook
    from pytest_costguard.core.pricing import usage_from_response

    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as work:
        header = f"BENCHMARKS = {here!r}\nMODEL = {gateway or ''!r}\nMAX_CALLS = {max_calls}\n"
        with open(os.path.join(work, "test_workload.py"), "w") as suite:
            suite.write(header + _SUITE)
        args = ["-p", "no:cacheprovider", "-q", "test_workload.py", f"--llm-budget={budget}"]
        args += [f"--llm-preflight={mode}", "--llm-report=report.json"]
        done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=work, capture_output=True, text=True)
        with open(os.path.join(work, "billed.json")) as f:
            seen = json.load(f)
        with open(os.path.join(work, "report.json")) as f:
            report = json.load(f)
    book = PriceBook()
    billed = sum((book.cost(usage_from_response(e["usage"]), e["model"]) for e in seen["billed"]), Decimal(0))
    return RunUtilization(
        mode,
        budget,
        gateway,
        billed,
        Decimal(str(report["total_cost_usd"])),
        seen["calls"],
        seen["batch"] == "billed",
        seen["refused"],
        Decimal(str(report.get("overspent_usd") or 0)),
        done.returncode,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="0.50", help="the budget in USD (default 0.50)")
    parser.add_argument("--runs", action="store_true", help="also run the workload as pytest runs (batch, gateway)")
    options = parser.parse_args()
    budget, show_runs = Decimal(options.budget), bool(options.runs)
    runs = [measure(mode, budget) for mode in ("auto", "off")]
    for run in runs:
        print(
            f"utilization.{run.mode}: {run.share:.1%} of ${budget} billed (${run.billed:.4f}) in {run.calls} calls "
            f"before the first refusal; recorded ${run.recorded:.4f}; {run.preflights} preflight counts"
        )
    auto, off = runs
    print(f"utilization.ratio: auto / off = {auto.share / off.share:.2f}x")
    if not show_runs:
        return
    failed = False
    for gateway in (None, GATEWAY_MODEL):
        for mode in ("auto", "off"):
            run = measure_run(mode, budget, gateway=gateway)
            problems = run.problems()
            failed = failed or bool(problems)
            print(
                f"run.{mode}.{'gateway' if gateway else 'direct'}: {run.share:.1%} of ${budget} billed "
                f"(${run.billed:.4f}); batch of {BATCH_SIZE} {'billed' if run.batch_billed else 'refused'}, "
                f"{run.calls} calls, {'refused' if run.refused else 'no refusal'}, overspent ${run.overspent}, "
                f"recorded ${run.recorded:.4f}, exit {run.exit_code}" + (f"; PROBLEMS: {problems}" if problems else "")
            )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
