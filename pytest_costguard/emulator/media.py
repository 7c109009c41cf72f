"""Media whose tokens are not in its bytes: image sizes from their headers, PDF pages and their text.

Images are billed as Anthropic documents it: `ceil(width * height / 750)` tokens after the image is scaled
down (aspect ratio kept) until its long edge is at most `MAX_IMAGE_LONG_EDGE` px and its area at most
`MAX_IMAGE_PIXELS`, so no image costs more than `MAX_IMAGE_TOKENS`. A PDF is billed per page: an image of
the page (`PDF_PAGE_IMAGE_TOKENS`) plus the page's text by the byte rule, capped at `PDF_PAGE_TEXT_TOKENS`,
so no page costs more than `MAX_PDF_PAGE_TOKENS`. Standard library only: the headers are parsed here.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "MAX_IMAGE_LONG_EDGE",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_TOKENS",
    "MAX_PDF_PAGE_TOKENS",
    "PDF_PAGE_IMAGE_TOKENS",
    "PDF_PAGE_TEXT_TOKENS",
    "PIXELS_PER_TOKEN",
    "ImageSize",
    "fragment_numbers",
    "image_size",
    "image_tokens",
    "pdf_page_texts",
    "pdf_page_tokens",
    "scaled_size",
]

MAX_IMAGE_LONG_EDGE = 1568
"""Longest edge, in pixels, the API keeps; a longer image is scaled down."""
MAX_IMAGE_PIXELS = 1_150_000
"""Largest area, in pixels, the API keeps (~1.15 megapixels); a larger image is scaled down."""
PIXELS_PER_TOKEN = 750
MAX_IMAGE_TOKENS = math.ceil(MAX_IMAGE_PIXELS / PIXELS_PER_TOKEN)
"""The most one image can cost the emulator: 1,534 tokens, whatever its size in bytes or pixels."""

PDF_PAGE_IMAGE_TOKENS = 1_500
"""What the image of one PDF page costs, on top of the page's text."""
PDF_PAGE_TEXT_TOKENS = 1_500
"""The most the text of one PDF page can cost (a page holds a bounded amount of legible text)."""
MAX_PDF_PAGE_TOKENS = PDF_PAGE_IMAGE_TOKENS + PDF_PAGE_TEXT_TOKENS
"""The most one PDF page can cost the emulator: 3,000 tokens."""

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# A page object's dictionary: `/Type /Page`, not `/Pages` (the page tree) nor `/PageLabel`-like names.
_PAGE_TYPE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
_OBJECT = re.compile(rb"(\d+)\s+(\d+)\s+obj\b(.*?)\bendobj", re.DOTALL)
_REFERENCE = re.compile(rb"(\d+)\s+(\d+)\s+R\b")
_CONTENTS = re.compile(rb"/Contents\s*(\[[^\]]*\]|\d+\s+\d+\s+R)")
_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\n?endstream", re.DOTALL)
_STRING_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}
# JPEG start-of-frame markers (baseline, progressive, ...): every SOFn but DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageSize(NamedTuple):
    """An image's format and size, as read from its header."""

    media_type: str
    width: int
    height: int


def image_size(data: bytes) -> ImageSize | None:
    """Return the format and size a PNG, JPEG, GIF or WebP header gives, or None when `data` is none of them."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return _sized("image/png", width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return _sized("image/gif", width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _sized(media_type: str, width: int, height: int) -> ImageSize | None:
    return ImageSize(media_type, width, height) if width > 0 and height > 0 else None


def _webp_size(data: bytes) -> ImageSize | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return _sized("image/webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return _sized("image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _sized("image/webp", width, height)
    return None


def _jpeg_size(data: bytes) -> ImageSize | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers carry no length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_SOF and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return _sized("image/jpeg", width, height)
        if marker == 0xDA:  # start of scan: no frame header came before it
            return None
        at += 2 + length
    return None


def scaled_size(width: int, height: int) -> tuple[int, int]:
    """Return the size the API scales an image to: long edge and area within their maxima, aspect kept."""
    longest = max(width, height)
    if longest > MAX_IMAGE_LONG_EDGE:
        width = max(1, width * MAX_IMAGE_LONG_EDGE // longest)
        height = max(1, height * MAX_IMAGE_LONG_EDGE // longest)
    if width * height > MAX_IMAGE_PIXELS:
        scale = math.sqrt(MAX_IMAGE_PIXELS / (width * height))
        width, height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        # Float rounding can land a pixel over the area: take it off the longer edge.
        while width * height > MAX_IMAGE_PIXELS:
            if width >= height:
                width -= 1
            else:
                height -= 1
    return width, height


def image_tokens(width: int, height: int) -> int:
    """Return the tokens an image of `width` x `height` pixels costs (at most `MAX_IMAGE_TOKENS`)."""
    scaled_width, scaled_height = scaled_size(width, height)
    return math.ceil(scaled_width * scaled_height / PIXELS_PER_TOKEN)


def fragment_numbers(url: str) -> Mapping[str, int]:
    """Return the positive integers a URL's fragment gives (`#w=800&h=600`, `#pages=12`), by name."""
    numbers: dict[str, int] = {}
    for name, value in parse_qsl(urlsplit(url).fragment):
        if value.isdigit() and int(value) > 0:
            numbers[name] = int(value)
    return numbers


def pdf_page_texts(data: bytes) -> list[int] | None:
    """Return the text bytes of each page of a PDF, or None when `data` is not a PDF with pages.

    Pages are the `/Type /Page` objects in the file. A page's text is the literal strings of its content
    streams (inflated when FlateDecode-compressed); a page whose objects are not readable (an object stream,
    an unknown filter) has no text.
    """
    if b"%PDF-" not in data[:1024]:
        return None
    pages = len(_PAGE_TYPE.findall(data))
    if pages == 0:
        return None
    objects = {int(number): content for number, _, content in _OBJECT.findall(data)}
    texts = [
        sum(_text_bytes(objects.get(int(ref), b"")) for ref, _ in _REFERENCE.findall(_contents(content)))
        for content in objects.values()
        if _PAGE_TYPE.search(_dictionary(content))
    ]
    # Pages found by the scan but not as readable objects have no text.
    return (texts + [0] * pages)[:pages]


def pdf_page_tokens(text_bytes: int) -> int:
    """Return what one PDF page with `text_bytes` of text costs (at most `MAX_PDF_PAGE_TOKENS`)."""
    return PDF_PAGE_IMAGE_TOKENS + min(math.ceil(text_bytes / 4), PDF_PAGE_TEXT_TOKENS)


def _dictionary(content: bytes) -> bytes:
    """Return an object's content before its stream, if it has one (a stream's bytes are not its dictionary)."""
    match = re.search(rb"\bstream\r?\n", content)
    return content[: match.start()] if match else content


def _contents(content: bytes) -> bytes:
    match = _CONTENTS.search(_dictionary(content))
    return match.group(1) if match else b""


def _text_bytes(content: bytes) -> int:
    match = _STREAM.search(content)
    if match is None:
        return 0
    stream = match.group(1)
    if b"/FlateDecode" in _dictionary(content):
        try:
            stream = zlib.decompress(stream)
        except zlib.error:
            return 0
    return sum(len(text) for text in _literal_strings(stream))


def _literal_strings(stream: bytes) -> list[bytes]:
    """Return the literal strings `( ... )` of a content stream, escapes and nested parentheses resolved."""
    found: list[bytes] = []
    at = 0
    while (start := stream.find(b"(", at)) != -1:
        depth, at, text = 1, start + 1, bytearray()
        while at < len(stream) and depth:
            byte = stream[at]
            if byte == 0x5C and at + 1 < len(stream):  # backslash
                escaped = stream[at + 1]
                octal = re.match(rb"[0-7]{1,3}", stream[at + 1 : at + 4])
                if octal:
                    text.append(int(octal.group(0), 8) & 0xFF)
                    at += 1 + len(octal.group(0))
                    continue
                if escaped not in (0x0A, 0x0D):  # a backslash before a newline continues the line
                    text += _STRING_ESCAPES.get(escaped, bytes([escaped]))
                at += 2
                continue
            depth += byte == 0x28
            depth -= byte == 0x29
            if depth:
                text.append(byte)
            at += 1
        found.append(bytes(text))
    return found
