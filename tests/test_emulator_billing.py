"""The emulator bills content whose tokens are not in its bytes as Anthropic documents it.

Images by their pixels, PDFs by their pages, built-in tools by their system prompts, server tools by their
results; `count_tokens` agrees with what `/v1/messages` bills, except for server tools' results.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_costguard.emulator import (
    BUILTIN_TOOL_TOKENS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_TOKENS,
    MAX_PDF_PAGE_TOKENS,
    PDF_PAGE_IMAGE_TOKENS,
    PDF_PAGE_TEXT_TOKENS,
    WEB_FETCH_CONTENT_TOKENS,
    WEB_SEARCH_RESULT_TOKENS,
    Emulator,
    count_input_tokens,
    image_size,
    image_tokens,
    pdf_page_texts,
)

MODEL = "claude-sonnet-5"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator) -> None:
    emulator.reset()


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


# --- media builders: headers only, which is all the emulator reads ------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def webp(width: int, height: int) -> bytes:
    extended = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    extended += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(extended)) + b"WEBP" + extended


def pdf(pages: list[str], *, compress: bool = False) -> bytes:
    """Return a PDF whose pages show `pages` (one literal string per page)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>")
    streams: dict[int, bytes] = {}
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        content = f"BT /F1 12 Tf 72 712 Td ({escaped}) Tj ET".encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R >>")
        streams[len(objects) + 1] = zlib.compress(content) if compress else content
        objects.append("")
    out = bytearray(b"%PDF-1.4\n")
    for number, body in enumerate(objects, start=1):
        if number in streams:
            data = streams[number]
            flate = " /Filter /FlateDecode" if compress else ""
            out += f"{number} 0 obj\n<< /Length {len(data)}{flate} >>\nstream\n".encode() + data
            out += b"\nendstream\nendobj\n"
        else:
            out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    return bytes(out + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_block(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}}


def pdf_block(data: bytes) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)}}


def ask(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    """One user message: the blocks, then a question (so the blocks' own tokens are easy to isolate)."""
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": "What is this?"}]}]


QUESTION_TOKENS = 4  # "What is this?": 13 bytes, ceil(13 / 4); not the first block, so no message overhead


def media_tokens(client: anthropic.Anthropic, *blocks: dict[str, Any]) -> int:
    return client.messages.count_tokens(model=MODEL, messages=ask(*blocks)).input_tokens - QUESTION_TOKENS


def total_input(usage: Any) -> int:
    return int(usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens)


# --- images ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "media_type", "tokens"),
    [
        (png(200, 100), "image/png", 27),  # 20,000 px / 750
        (jpeg(1000, 1000), "image/jpeg", 1334),  # 1,000,000 px: within both maxima
        (gif(3000, 3000), "image/gif", 1533),  # long edge to 1568, then area to 1072 x 1072
        (webp(4000, 100), "image/webp", 82),  # long edge only: 1568 x 39
    ],
)
def test_an_image_is_billed_by_its_pixels_not_its_bytes(
    client: anthropic.Anthropic, data: bytes, media_type: str, tokens: int
) -> None:
    assert len(data) < 100
    assert media_tokens(client, image_block(data, media_type)) == tokens


def test_a_tiny_png_can_cost_the_maximum_and_no_image_costs_more(client: anthropic.Anthropic) -> None:
    data = png(20_000, 20_000)
    assert len(data) < 60
    assert MAX_IMAGE_TOKENS == math.ceil(MAX_IMAGE_PIXELS / 750) == 1534
    assert MAX_IMAGE_TOKENS - 2 <= media_tokens(client, image_block(data)) <= MAX_IMAGE_TOKENS


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 30_000), height=st.integers(1, 30_000))
def test_image_tokens_follow_the_documented_formula_within_the_maxima(width: int, height: int) -> None:
    tokens = image_tokens(width, height)
    assert 1 <= tokens <= MAX_IMAGE_TOKENS
    if max(width, height) <= 1568 and width * height <= MAX_IMAGE_PIXELS:
        assert tokens == math.ceil(width * height / 750)


@pytest.mark.parametrize("build", [png, gif, jpeg, webp])
def test_image_headers_are_read_for_every_supported_format(build: Any) -> None:
    size = image_size(build(640, 480))
    assert size is not None
    assert (size.width, size.height) == (640, 480)


def test_an_image_by_url_is_sized_by_its_fragment_else_billed_the_maximum(client: anthropic.Anthropic) -> None:
    sized = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png#w=200&h=100"}}
    unsized = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    assert media_tokens(client, sized) == 27
    assert media_tokens(client, unsized) == MAX_IMAGE_TOKENS


def test_an_image_by_file_id_is_read_from_the_emulators_files(
    client: anthropic.Anthropic, emulator: Emulator
) -> None:
    block = {"type": "image", "source": {"type": "file", "file_id": "file_011photo"}}
    with pytest.raises(anthropic.BadRequestError, match="file_011photo"):
        media_tokens(client, block)
    emulator.files["file_011photo"] = jpeg(1000, 1000)
    assert media_tokens(client, block) == 1334


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (image_block(png(10, 10), "image/jpeg"), "appears to be a image/png image"),
        (image_block(b"not an image at all"), "Could not process image"),
        (image_block(png(10, 10), "image/bmp"), "media_type"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "@@"}}, "base64"),
        (pdf_block(b"%PDF-1.4 but no pages"), "PDF specified was not valid"),
    ],
)
def test_media_the_api_cannot_read_is_a_400(
    client: anthropic.Anthropic, emulator: Emulator, block: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.create(model=MODEL, max_tokens=5, messages=ask(block))
    assert emulator.billed == []


def test_an_image_in_a_tool_result_is_billed_as_an_image(client: anthropic.Anthropic) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image_block(png(200, 100))]}],
        },
    ]
    with_image = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
    messages[2]["content"][0]["content"] = []
    assert with_image - client.messages.count_tokens(model=MODEL, messages=messages).input_tokens == 27


# --- PDFs --------------------------------------------------------------------------------------------------


def test_each_pdf_page_is_billed_as_an_image_plus_its_text(client: anthropic.Anthropic) -> None:
    pages = ["Hello", "x" * 41, ""]
    expected = 3 * PDF_PAGE_IMAGE_TOKENS + math.ceil(5 / 4) + math.ceil(41 / 4) + 0
    assert media_tokens(client, pdf_block(pdf(pages))) == expected
    assert media_tokens(client, pdf_block(pdf(pages, compress=True))) == expected


def test_a_small_blank_pdf_can_cost_far_more_than_its_bytes(client: anthropic.Anthropic) -> None:
    data = pdf([""] * 100)
    assert len(data) < 20_000
    assert media_tokens(client, pdf_block(data)) == 100 * PDF_PAGE_IMAGE_TOKENS


def test_pdf_pages_are_page_objects_not_the_page_tree_and_their_text_is_capped() -> None:
    texts = pdf_page_texts(pdf(["(nested) and \\ escaped", "y" * 100_000]))
    assert texts == [len("(nested) and \\ escaped"), 100_000]
    request = {"model": MODEL, "messages": ask(pdf_block(pdf(["y" * 100_000])))}
    assert count_input_tokens(request) == MAX_PDF_PAGE_TOKENS + QUESTION_TOKENS
    assert MAX_PDF_PAGE_TOKENS == PDF_PAGE_IMAGE_TOKENS + PDF_PAGE_TEXT_TOKENS == 3000


def test_pdfs_by_url_and_documents_by_file_id_are_billed_deterministically(
    client: anthropic.Anthropic, emulator: Emulator
) -> None:
    def document(source: dict[str, Any]) -> dict[str, Any]:
        return {"type": "document", "source": source}

    assert media_tokens(client, document({"type": "url", "url": "https://example.com/a.pdf"})) == 3000
    assert media_tokens(client, document({"type": "url", "url": "https://example.com/a.pdf#pages=7"})) == 21_000
    emulator.files["file_pdf"] = pdf(["Hello", "World"])
    emulator.files["file_txt"] = b"plain text file, 30 bytes long"
    assert media_tokens(client, document({"type": "file", "file_id": "file_pdf"})) == 2 * 1500 + 2 + 2
    assert media_tokens(client, document({"type": "file", "file_id": "file_txt"})) == 8


def test_text_documents_keep_the_byte_rule(client: anthropic.Anthropic) -> None:
    text = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a" * 40}}
    assert media_tokens(client, text) == 10 + 3  # ceil(40 / 4), plus the first block's message overhead


# --- tools -------------------------------------------------------------------------------------------------

BUILTIN_TOOLS = [
    ({"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768}, 1201),
    ({"type": "bash_20250124", "name": "bash"}, 245),
    ({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}, 700),
]


@pytest.mark.parametrize(("tool", "overhead"), BUILTIN_TOOLS)
def test_a_builtin_tool_adds_its_system_prompt_to_its_definition(
    client: anthropic.Anthropic, tool: dict[str, Any], overhead: int
) -> None:
    hello = [{"role": "user", "content": "Hello there"}]
    bare = client.messages.count_tokens(model=MODEL, messages=hello).input_tokens
    counted = client.messages.count_tokens(model=MODEL, messages=hello, tools=[tool]).input_tokens
    definition = json.dumps(tool, separators=(",", ":"), sort_keys=True)
    assert counted - bare == math.ceil(len(definition) / 4) + overhead
    assert overhead == next(v for k, v in BUILTIN_TOOL_TOKENS.items() if tool["type"].startswith(k))


def test_web_search_bills_each_search_and_its_results_up_to_max_uses(
    client: anthropic.Anthropic, emulator: Emulator
) -> None:
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    for asked, searches in (("Look it up", 1), ("Dig [[costguard:web_search=5]]", 2)):
        messages = [{"role": "user", "content": asked}]
        counted = client.messages.count_tokens(model=MODEL, messages=messages, tools=[tool])
        reply = client.messages.create(model=MODEL, max_tokens=5, messages=messages, tools=[tool])
        assert reply.usage.server_tool_use is not None
        assert reply.usage.server_tool_use.web_search_requests == searches
        # count_tokens cannot know what the searches will read: the difference is exactly their results.
        assert total_input(reply.usage) - counted.input_tokens == searches * WEB_SEARCH_RESULT_TOKENS
    assert [entry["usage"]["server_tool_use"]["web_search_requests"] for entry in emulator.billed] == [1, 2]


def test_web_fetch_bills_fetched_content_capped_by_max_content_tokens(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Read these [[costguard:web_fetch=3]]"}]
    for cap, per_fetch in ((None, WEB_FETCH_CONTENT_TOKENS), (1000, 1000)):
        tool: dict[str, Any] = {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2}
        if cap is not None:
            tool["max_content_tokens"] = cap
        counted = client.messages.count_tokens(model=MODEL, messages=messages, tools=[tool])
        reply = client.messages.create(model=MODEL, max_tokens=5, messages=messages, tools=[tool])
        assert reply.usage.server_tool_use is not None
        assert reply.usage.server_tool_use.web_fetch_requests == 2
        assert reply.usage.server_tool_use.web_search_requests == 0
        assert total_input(reply.usage) - counted.input_tokens == 2 * per_fetch


def test_a_request_without_server_tools_reports_no_server_tool_use(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Hi"}])
    assert reply.usage.server_tool_use is None


# --- count_tokens agrees with what is billed ---------------------------------------------------------------

IMAGE_FORMATS = [(png, "image/png"), (gif, "image/gif"), (jpeg, "image/jpeg"), (webp, "image/webp")]
images = st.tuples(st.sampled_from(IMAGE_FORMATS), st.integers(1, 5000), st.integers(1, 5000)).map(
    lambda t: image_block(t[0][0](t[1], t[2]), t[0][1])
)
pdfs = st.tuples(st.lists(st.text(max_size=300), min_size=1, max_size=5), st.booleans()).map(
    lambda t: pdf_block(pdf([text.encode("latin-1", "replace").decode("latin-1") for text in t[0]], compress=t[1]))
)
texts = st.text(min_size=1, max_size=500).map(lambda text: {"type": "text", "text": text})
url_images = st.tuples(st.integers(1, 4000), st.integers(1, 4000)).map(
    lambda t: {"type": "image", "source": {"type": "url", "url": f"https://example.com/i.png#w={t[0]}&h={t[1]}"}}
)
tools = st.lists(
    st.sampled_from(
        [tool for tool, _ in BUILTIN_TOOLS]
        + [{"name": "get_weather", "description": "Weather by city", "input_schema": {"type": "object"}}]
    ),
    max_size=3,
    unique_by=lambda tool: str(tool["name"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(st.one_of(texts, images, pdfs, url_images), min_size=1, max_size=4),
    tool_list=tools,
    system=st.none() | st.text(min_size=1, max_size=300),
    cached=st.booleans(),
)
def test_count_tokens_is_exactly_the_billed_input(
    client: anthropic.Anthropic,
    blocks: list[dict[str, Any]],
    tool_list: list[dict[str, Any]],
    system: str | None,
    cached: bool,
) -> None:
    messages = [{"role": "user", "content": blocks}]
    extra: dict[str, Any] = {"tools": tool_list} if tool_list else {}
    if system is not None:
        extra["system"] = system
    if cached:
        extra["cache_control"] = {"type": "ephemeral"}
    counted = client.messages.count_tokens(model=MODEL, messages=messages, **extra)
    first = client.messages.create(model=MODEL, max_tokens=5, messages=messages, **extra)
    again = client.messages.create(model=MODEL, max_tokens=5, messages=messages, **extra)
    # Cached or not, written or read, the input billed is what count_tokens said.
    assert total_input(first.usage) == total_input(again.usage) == counted.input_tokens
    assert counted.input_tokens == count_input_tokens({"model": MODEL, "messages": messages, **extra})
