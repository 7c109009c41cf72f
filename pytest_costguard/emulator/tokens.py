"""Input token counting: the request cut into billed segments, in cache-prefix order.

A segment of `b` UTF-8 bytes of text counts `ceil(b / 4)` tokens; the first segment of every message also
counts a template overhead of `min(MESSAGE_OVERHEAD, b - ceil(b / 4))`, so a text segment never counts more
tokens than its bytes. Content whose tokens are not in its bytes is billed by its own rule: images and PDFs
(`media`, whether inline, by URL or by file id), built-in tools' system prompts (`tools`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from ..domain.request import block_text, content_text
from .cache import Segment, mark_breakpoints, ttl_of
from .errors import ApiError
from .media import (
    IMAGE_MEDIA_TYPES,
    MAX_IMAGE_TOKENS,
    MAX_PDF_PAGE_TOKENS,
    fragment_numbers,
    image_size,
    image_tokens,
    pdf_page_texts,
    pdf_page_tokens,
)
from .tools import builtin_tool_tokens
from .validation import validate_request
from .wire import compact

__all__ = ["DEFAULT_URL_PDF_PAGES", "MESSAGE_OVERHEAD", "Files", "count_input_tokens", "segments", "text_of"]

MESSAGE_OVERHEAD = 3
DEFAULT_URL_PDF_PAGES = 1
"""Pages a PDF given by URL is billed for when its URL does not say (`#pages=N`), each at its maximum."""

Files = Mapping[str, bytes]
"""The files a request can name by `file_id`: their content, by id (`Emulator.files`)."""
_NO_FILES: Files = {}


def ceil4(size: int) -> int:
    """Return the tokens `size` bytes of text count: a quarter, rounded up."""
    return -(-size // 4)


text_of = content_text
"""The text a content value carries (`domain.request.content_text`)."""


def _block_tokens(block: Mapping[str, Any], where: str, files: Files) -> tuple[int, int]:
    """Return (tokens, spare) of a content block: spare is its text bytes not counted as tokens."""
    kind = block.get("type")
    if kind == "image":
        return _image_tokens(block.get("source"), where, files), 0
    source = block.get("source")
    if kind == "document" and not (isinstance(source, Mapping) and source.get("type") in ("text", "content")):
        return _document_tokens(source, where, files), 0
    size = len(block_text(block).encode("utf-8"))
    media = 0
    inner = block.get("content") if kind == "tool_result" else None
    if kind == "document" and isinstance(source, Mapping):
        inner = source.get("content")
    if isinstance(inner, list):
        # Images inside a tool result or a content document are billed as images; their text as text.
        media = sum(
            _block_tokens(item, f"{where}.content.{k}", files)[0]
            for k, item in enumerate(inner)
            if isinstance(item, Mapping) and item.get("type") in ("image", "document")
        )
    return ceil4(size) + media, size - ceil4(size)


def _source(source: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(source, Mapping):
        raise ApiError(400, f"{where}.source: Field required")
    return source


def _decoded(source: Mapping[str, Any], where: str) -> bytes:
    try:
        return base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}.source.data: invalid base64 data") from None


def _file(source: Mapping[str, Any], where: str, files: Files) -> bytes:
    file_id = source.get("file_id")
    content = files.get(file_id) if isinstance(file_id, str) else None
    if content is None:
        raise ApiError(400, f"{where}.source.file_id: file {file_id!r} not found (give it to Emulator.files)")
    return content


def _image_tokens(source: Any, where: str, files: Files) -> int:
    source = _source(source, where)
    kind = source.get("type")
    if kind == "url":
        numbers = fragment_numbers(str(source.get("url", "")))
        if "w" in numbers and "h" in numbers:
            return image_tokens(numbers["w"], numbers["h"])
        return MAX_IMAGE_TOKENS
    if kind == "base64":
        declared = source.get("media_type")
        if declared not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(f"'{media_type}'" for media_type in IMAGE_MEDIA_TYPES)
            raise ApiError(400, f"{where}.source.media_type: Input should be {allowed}")
        data = _decoded(source, where)
    elif kind == "file":
        declared, data = None, _file(source, where, files)
    else:
        raise ApiError(400, f"{where}.source.type: Input should be 'base64', 'url' or 'file'")
    size = image_size(data)
    if size is None:
        raise ApiError(400, f"{where}.source: Could not process image")
    if declared is not None and size.media_type != declared:
        raise ApiError(
            400,
            f"{where}.source: The image was specified using the {declared} media type, "
            f"but the image appears to be a {size.media_type} image",
        )
    return image_tokens(size.width, size.height)


def _document_tokens(source: Any, where: str, files: Files) -> int:
    source = _source(source, where)
    kind = source.get("type")
    if kind == "url":
        pages = fragment_numbers(str(source.get("url", ""))).get("pages", DEFAULT_URL_PDF_PAGES)
        return pages * MAX_PDF_PAGE_TOKENS
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            raise ApiError(400, f"{where}.source.media_type: Input should be 'application/pdf'")
        data = _decoded(source, where)
    elif kind == "file":
        data = _file(source, where, files)
        if not data.lstrip().startswith(b"%PDF-"):
            # A plain-text file: its text, by the byte rule.
            return ceil4(len(data))
    else:
        raise ApiError(400, f"{where}.source.type: Input should be 'base64', 'text', 'content', 'url' or 'file'")
    texts = pdf_page_texts(data)
    if texts is None:
        raise ApiError(400, f"{where}.source: The PDF specified was not valid")
    return sum(pdf_page_tokens(text) for text in texts)


def _without_cache_control(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "cache_control"}


def segments(body: Mapping[str, Any], files: Files = _NO_FILES) -> list[Segment]:
    """Cut a validated request into counted segments, in cache-prefix order (tools, system, messages).

    Raises `ApiError` (400) where the request's breakpoints or media are rejected.
    """
    found: list[Segment] = []
    for tool in body.get("tools") or []:
        definition = compact(_without_cache_control(tool)).encode()
        tokens = ceil4(len(definition)) + builtin_tool_tokens(tool)
        found.append(Segment(tokens, b"tool:" + definition, ttl_of(tool.get("cache_control"))))
    system = body.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) and system else system or []
    for j, block in enumerate(system_blocks):
        key = b"system:" + compact(_without_cache_control(block)).encode()
        found.append(Segment(_block_tokens(block, f"system.{j}", files)[0], key, ttl_of(block.get("cache_control"))))
    for i, message in enumerate(body["messages"]):
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for index, block in enumerate(blocks):
            tokens, spare = _block_tokens(block, f"messages.{i}.content.{index}", files)
            if index == 0:
                # The chat template adds a few tokens per message; never more than the block's spare bytes.
                tokens += min(MESSAGE_OVERHEAD, spare)
            head = f"{message['role']}:" if index == 0 else "+"
            key = (head + compact(_without_cache_control(block))).encode()
            found.append(Segment(tokens, key, ttl_of(block.get("cache_control"))))
    return mark_breakpoints(found, body.get("cache_control"))


def count_input_tokens(request: Mapping[str, Any], files: Files = _NO_FILES) -> int:
    """Return the input tokens the emulator counts for a Messages request (cache and server tools ignored)."""
    validate_request(request, for_count=True)
    return sum(segment.tokens for segment in segments(request, files))
