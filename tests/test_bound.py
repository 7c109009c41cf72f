"""The safe local bound (issue 11): content whose tokens are not in its bytes is bounded by what the API allows.

Two properties check the bound: against the emulator's billing (pytest_costguard/emulator, which bills images,
PDFs, files, built-in and server tools as Anthropic documents), and against a small billing model written here
that also covers what the emulator bills narrowly (documents by reference up to the context window).
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_costguard import BudgetExceededError, PriceBook
from pytest_costguard.core.budget import (
    DEFAULT_RULES,
    BoundRules,
    bound_request,
    input_token_bound,
    pdf_page_count,
    worst_case_cost,
)
from pytest_costguard.core.pricing import Usage
from pytest_costguard.metering.guard import CostGuard
from pytest_costguard.metering.ledger import InMemoryLedger

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 60).decode()


def _pdf(pages: int, text: str = "") -> str:
    """A minimal uncompressed PDF of `pages` pages, as base64."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count %d >>" % pages]
    objects += [b"<< /Type /Page /Parent 2 0 R >> BT (" + text.encode() + b") Tj ET" for _ in range(pages)]
    body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj %s endobj\n" % (i + 1, o) for i, o in enumerate(objects))
    return base64.b64encode(body + b"%%EOF").decode()


def _request(model: str, content: list[dict], **extra: object) -> dict:
    return {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": content}], **extra}


def _text_bytes(request: dict) -> int:
    return input_token_bound({"model": request["model"], "messages": [{"role": "user", "content": "x"}]})


def _document(source: dict) -> dict:
    return {"type": "document", "source": source}


def test_pdf_pages_are_counted_from_the_bytes() -> None:
    assert pdf_page_count(_pdf(100)) == 100
    assert pdf_page_count(_pdf(1)) == 1
    # Only the page tree's /Count is readable (pages in compressed object streams): it is the count.
    tree_only = base64.b64encode(b"%PDF-1.7 << /Type /Pages /Count 12 /Kids [] >> %%EOF").decode()
    assert pdf_page_count(tree_only) == 12
    assert pdf_page_count(base64.b64encode(b"%PDF-1.7 compressed %%EOF").decode()) is None


def test_an_inline_100_page_pdf_is_bounded_by_its_pages_not_its_bytes() -> None:
    data = _pdf(100)
    request = _request("claude-haiku-4-5", [_document({"type": "base64", "media_type": "application/pdf",
                                                       "data": data})])
    bound = input_token_bound(request)
    assert len(data) < 14_000
    # 100 pages at 3,000 tokens is 300,000 tokens, whatever the 13 kB of bytes, capped at haiku 4.5's window.
    assert bound == 200_000
    # On sonnet 4.6 (1M context): the pages, plus the request's bytes (the PDF's own bytes bound its plain text).
    sonnet = {**request, "model": "claude-sonnet-4-6"}
    size = len(json.dumps({"messages": request["messages"]}, separators=(",", ":")))
    assert input_token_bound(sonnet) == 100 * DEFAULT_RULES.pdf_page_max_tokens + size
    # The billing fake billed this PDF $0.16 on haiku (~1,600 tokens a page): the bound is $0.20.
    assert worst_case_cost(request) == Decimal("0.200005")


def test_a_pdf_whose_pages_cannot_be_counted_or_that_is_not_inline_takes_the_context_window() -> None:
    opaque = base64.b64encode(b"%PDF-1.7 compressed %%EOF").decode()
    for source in (
        {"type": "base64", "media_type": "application/pdf", "data": opaque},
        {"type": "url", "url": "https://example.com/report.pdf"},
        {"type": "file", "file_id": "file_011"},
    ):
        haiku = _request("claude-haiku-4-5", [_document(source)])
        sonnet = _request("claude-sonnet-4-6", [_document(source)])
        assert input_token_bound(haiku) == 200_000  # capped at haiku 4.5's context window
        assert bound_request(sonnet, PriceBook().rates("claude-sonnet-4-6")).input_tokens >= 1_000_000
    # A 2 MB text document by file_id billed $1.62 on sonnet in the issue: the bound (1M tokens at $3) is $3+.
    by_file = _request("claude-sonnet-4-6", [_document({"type": "file", "file_id": "file_2mb"})])
    assert worst_case_cost(by_file) >= Decimal("3.00")


def test_images_are_bounded_at_the_per_image_maximum_whatever_their_bytes() -> None:
    small = _request("claude-haiku-4-5", [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                       "data": PNG}}] * 20)
    assert input_token_bound(small) >= 20 * 1_600
    big_data = "A" * 5_000_000  # 5 MB of base64: its bytes are not its tokens either way
    big = _request("claude-haiku-4-5", [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                     "data": big_data}}])
    assert 1_600 <= input_token_bound(big) < 2_000
    by_url = _request("claude-haiku-4-5", [{"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}])
    assert input_token_bound(by_url) >= 1_600


def test_built_in_tools_add_their_documented_overheads() -> None:
    base = _request("claude-haiku-4-5", [{"type": "text", "text": "hi"}])
    tools = [
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "bash_20250124", "name": "bash"},
    ]
    with_tools = {**base, "tools": tools}
    tool_bytes = len(json.dumps(tools, separators=(",", ":")).encode()) + len(',"tools":')
    # The tool-use system prompt (1,000), computer use (1,500), text editor (800), bash (300).
    assert input_token_bound(with_tools) == input_token_bound(base) + tool_bytes + 1_000 + 1_500 + 800 + 300


def test_web_fetch_is_bounded_by_max_uses_times_max_content_tokens_else_the_context_window() -> None:
    base = _request("claude-haiku-4-5", [{"type": "text", "text": "read it"}])
    bounded = {**base, "tools": [{"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2,
                                  "max_content_tokens": 5_000}]}
    open_ended = {**base, "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}
    assert 10_000 < input_token_bound(bounded) < 12_000
    assert input_token_bound(open_ended) >= 200_000
    # The fetch of a 200 kB page billed $0.0504 on haiku: the open-ended bound is above it.
    assert worst_case_cost(open_ended) >= Decimal("0.0504")


def test_plain_text_requests_keep_their_byte_bound() -> None:
    request = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "héllo"}]}
    assert input_token_bound(request) == len('{"messages":[{"role":"user","content":"héllo"}]}'.encode())


def test_a_refusal_says_which_content_made_the_bound_large_and_names_preflight() -> None:
    guard = CostGuard(ledger=InMemoryLedger(limit=Decimal("0.05")))
    request = _request("claude-haiku-4-5", [_document({"type": "base64", "media_type": "application/pdf",
                                                       "data": _pdf(100)})])
    with pytest.raises(BudgetExceededError) as refused:
        guard.begin(request, streamed=False)
    message = str(refused.value)
    assert "an inline PDF of 100 page(s) at the per-page maximum: up to 300,000 tokens" in message
    assert "--llm-preflight" in message
    assert guard.refusals[0].message == message


def test_the_rules_can_be_overridden() -> None:
    request = _request("claude-x-1", [_document({"type": "url", "url": "https://x/a.pdf"})])
    rules = BoundRules(context_windows=(("claude-x", 50_000),))
    assert input_token_bound(request, rules) == 50_000
    assert input_token_bound(request) == 200_000


# -- the property -------------------------------------------------------------------------------------------------
# A billing model of Anthropic's published rules (docs/budgets.md gives the sources): text tokens at most its
# bytes; an image w x h / 750 tokens after resizing to a long edge of 1568 px and 1.15 MP; a PDF page its text
# plus an image of the page; a document by reference anything up to the context window; built-in tools their
# documented overheads; web fetch up to max_content_tokens per use; a prompt over the context window rejected.

MODELS = ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"]
WINDOW = {"claude-haiku-4-5": 200_000, "claude-sonnet-4-6": 1_000_000, "claude-opus-4-7": 1_000_000}
TOOL_OVERHEAD = {"computer_20250124": 499 + 735, "bash_20250124": 245, "text_editor_20250728": 700}


def _image_tokens(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height), (1_150_000 / (width * height)) ** 0.5)
    return int(width * scale) * int(height * scale) // 750 + 1


@st.composite
def billed_request(draw: st.DrawFn) -> tuple[dict, Usage]:
    model = draw(st.sampled_from(MODELS))
    content: list[dict] = []
    billed = 0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "image", "image_url", "pdf", "pdf_url", "file", "text_doc"]))
        if kind == "text":
            text = draw(st.text(max_size=300))
            content.append({"type": "text", "text": text})
            billed += draw(st.integers(0, len(text.encode())))
        elif kind in ("image", "image_url"):
            source = ({"type": "base64", "media_type": "image/png", "data": PNG} if kind == "image"
                      else {"type": "url", "url": "https://example.com/i.png"})
            content.append({"type": "image", "source": source})
            billed += _image_tokens(draw(st.integers(1, 8000)), draw(st.integers(1, 8000)))
        elif kind == "pdf":
            pages = draw(st.integers(1, 30))
            page_text = draw(st.text(alphabet="abc xyz", max_size=200))
            content.append(_document({"type": "base64", "media_type": "application/pdf",
                                      "data": _pdf(pages, page_text)}))
            page_image = _image_tokens(draw(st.integers(600, 2000)), draw(st.integers(600, 2600)))
            billed += pages * (page_image + len(page_text.encode()))
        elif kind == "text_doc":
            data = draw(st.text(max_size=300))
            content.append(_document({"type": "text", "media_type": "text/plain", "data": data}))
            billed += draw(st.integers(0, len(data.encode())))
        else:
            source = ({"type": "url", "url": "https://example.com/d.pdf"} if kind == "pdf_url"
                      else {"type": "file", "file_id": "file_1"})
            content.append(_document(source))
            billed += draw(st.integers(0, WINDOW[model]))
    request: dict = {"model": model, "max_tokens": draw(st.integers(1, 4096)),
                     "messages": [{"role": "user", "content": content}]}
    tools = draw(st.lists(st.sampled_from([*TOOL_OVERHEAD, "custom", "web_fetch"]), max_size=4, unique=True))
    server = False
    if tools:
        request["tools"] = []
        billed += 346  # the tool-use system prompt
        for kind in tools:
            if kind == "custom":
                request["tools"].append({"name": "lookup", "input_schema": {"type": "object"}})
            elif kind == "web_fetch":
                server = True
                uses, per_use = draw(st.integers(0, 5)), draw(st.integers(0, 20_000))
                request["tools"].append({"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": uses,
                                         "max_content_tokens": per_use})
                billed += draw(st.integers(0, uses)) * per_use
            else:
                request["tools"].append({"type": kind, "name": kind.split("_2")[0]})
                billed += TOOL_OVERHEAD[kind]
    if billed > WINDOW[model] and not server:
        billed = 0  # the API rejects a prompt over the context window: nothing is billed
    usage = Usage(input_tokens=billed, output_tokens=draw(st.integers(0, request["max_tokens"])))
    return request, usage


@settings(max_examples=200, deadline=None)
@given(billed_request())
def test_the_bound_is_never_below_what_the_billing_model_bills(pair: tuple[dict, Usage]) -> None:
    request, usage = pair
    book = PriceBook()
    assert worst_case_cost(request, book) >= book.cost(usage, request["model"])


# -- the property against the emulator (main's emulator bills images, PDFs and tools as Anthropic documents) ------


def _png(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR"
    return base64.b64encode(header + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\0\0\0").decode()


def _pdf_with_text(pages: list[str]) -> str:
    """An uncompressed PDF whose pages each draw one string (their text, for the emulator)."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()]
    for i, text in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /Contents {4 + 2 * i} 0 R >>".encode())
        objects.append(b"<< >>\nstream\nBT (" + text.encode() + b") Tj ET\nendstream")
    body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj\n%s\nendobj\n" % (i + 1, o) for i, o in enumerate(objects))
    return base64.b64encode(body + b"%%EOF").decode()


@st.composite
def emulator_request(draw: st.DrawFn) -> tuple[dict, dict[str, bytes]]:
    model = draw(st.sampled_from(MODELS))
    files: dict[str, bytes] = {}
    content: list[dict] = []
    for n in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["text", "image", "image_url", "pdf", "pdf_url", "file_text", "file_pdf"]))
        if kind == "text":
            content.append({"type": "text", "text": draw(st.text(min_size=1, max_size=300))})
        elif kind == "image":
            data = _png(draw(st.integers(1, 9000)), draw(st.integers(1, 9000)))
            content.append({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}})
        elif kind == "image_url":
            size = draw(st.sampled_from(["", f"#w={draw(st.integers(1, 9000))}&h={draw(st.integers(1, 9000))}"]))
            content.append({"type": "image", "source": {"type": "url", "url": f"https://example.com/i.png{size}"}})
        elif kind == "pdf":
            texts = draw(st.lists(st.text(alphabet="abc xyz", max_size=8000), min_size=1, max_size=20))
            content.append(_document({"type": "base64", "media_type": "application/pdf",
                                      "data": _pdf_with_text(texts)}))
        elif kind == "pdf_url":
            pages = draw(st.integers(1, 60))
            content.append(_document({"type": "url", "url": f"https://example.com/d.pdf#pages={pages}"}))
        else:
            file_id = f"file_{n}"
            files[file_id] = (base64.b64decode(_pdf_with_text(["p"] * draw(st.integers(1, 10))))
                              if kind == "file_pdf" else b"x" * draw(st.integers(0, 300_000)))
            content.append(_document({"type": "file", "file_id": file_id}))
    uses = draw(st.integers(0, 5))
    marker = f"[[costguard:web_search={uses}]][[costguard:web_fetch={uses}]]"
    content.append({"type": "text", "text": marker})
    request: dict = {"model": model, "max_tokens": draw(st.integers(1, 4096)),
                     "messages": [{"role": "user", "content": content}]}
    tools = []
    for kind in draw(st.lists(st.sampled_from(["computer", "bash", "text_editor", "custom", "web_search",
                                                "web_fetch"]), max_size=4, unique=True)):
        if kind == "computer":
            tools.append({"type": "computer_20250124", "name": "computer", "display_width_px": 1024,
                          "display_height_px": 768})
        elif kind == "bash":
            tools.append({"type": "bash_20250124", "name": "bash"})
        elif kind == "text_editor":
            tools.append({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"})
        elif kind == "custom":
            tools.append({"name": "lookup", "description": "find", "input_schema": {"type": "object"}})
        elif kind == "web_search":
            tools.append({"type": "web_search_20250305", "name": "web_search",
                          **({"max_uses": draw(st.integers(0, 5))} if draw(st.booleans()) else {})})
        else:
            tools.append({"type": "web_fetch_20250910", "name": "web_fetch",
                          **({"max_uses": draw(st.integers(0, 5)),
                              "max_content_tokens": draw(st.integers(1, 20_000))} if draw(st.booleans()) else {})})
    if tools:
        request["tools"] = tools
    return request, files


@settings(max_examples=200, deadline=None)
@given(emulator_request(), st.data())
def test_the_bound_is_never_below_what_the_emulator_bills(
    pair: tuple[dict, dict[str, bytes]], data: st.DataObject
) -> None:
    from hypothesis import assume

    from pytest_costguard.emulator.errors import ApiError
    from pytest_costguard.emulator.replies import last_user_text
    from pytest_costguard.emulator.tokens import segments
    from pytest_costguard.emulator.tools import server_tool_use
    from pytest_costguard.emulator.validation import validate_request

    request, files = pair
    try:
        validate_request(request)
        prompt = sum(segment.tokens for segment in segments(request, files))
    except ApiError:
        assume(False)
    server = server_tool_use(request, last_user_text(request))
    billed_in = prompt + (server.tokens if server is not None else 0)
    searches = server.web_search_requests if server is not None else 0
    if server is None:
        # The API rejects (and does not bill) a prompt over the model's context window.
        assume(billed_in <= DEFAULT_RULES.context_window(request["model"]))
    usage = Usage(input_tokens=billed_in, output_tokens=data.draw(st.integers(0, request["max_tokens"])),
                  web_search_requests=searches)
    book = PriceBook()
    assert worst_case_cost(request, book) >= book.cost(usage, request["model"])
