"""A local stand-in for Anthropic's Messages API: run LLM test suites offline and rehearse outages.

The emulator speaks the real wire format (JSON replies, server-sent events, JSONL batch results, error
bodies, status codes), so the real `anthropic` SDK can be pointed at it with `base_url`. Everything it
answers is deterministic (docs/offline.md has the full rules):

* Input tokens. The request is cut into segments: each tool definition (compact JSON without its
  `cache_control`), each system block and each message content block (a string content is one block).
  A segment of `b` UTF-8 bytes of text counts `ceil(b / 4)` tokens; the first segment of every message also
  counts a template overhead of `min(3, b - ceil(b / 4))`, so text never counts more tokens than bytes.
  Content whose tokens are not in its bytes is billed as Anthropic documents it (`media`, `tools`): an
  image `ceil(w * h / 750)` after scaling to at most 1568 px and 1.15 MP (`MAX_IMAGE_TOKENS`); a PDF page
  `PDF_PAGE_IMAGE_TOKENS` plus its text (`MAX_PDF_PAGE_TOKENS`); a built-in tool its system prompt
  (`BUILTIN_TOOL_TOKENS`); server tools' results after the prompt (not in `count_tokens`).
* Output. The reply is a sentence of three-letter words chosen from a hash of the request's model, system,
  messages and tools. Every word plus its trailing space or final full stop is 4 bytes and exactly one output
  token. A reply has 8 to 31 tokens, or exactly `N` when the last user message contains
  `[[costguard:output=N]]`. It is cut at `max_tokens` (stop_reason "max_tokens"), else "end_turn".
* Prompt caching. Breakpoints are the `cache_control` marks on tools, system blocks and message content
  blocks, plus a top-level `cache_control` that marks the last block. The longest cached prefix is a read,
  the tokens from there to the last cacheable breakpoint a write (5m/1h by TTL), the rest uncached input.
* Faults. Queued with `Emulator.inject` or `POST /_emulator/faults`, or asked for by a marker in the request
  text, `[[costguard:fault=KIND]]` or `[[costguard:fault=KINDxN]]` (the first N attempts of that body fail).
* Batches. `/v1/messages/batches` ends a batch at once (or holds it, `Emulator.hold_batches`); succeeded
  requests are billed with `service_tier: "batch"` (50% off).
* Billing. Every response that delivered a message is appended to the ledger (`Emulator.billed`,
  `GET /_emulator/billed`) with the usage the API would bill; failed attempts (4xx/5xx) are not.

Standard library only: no module here imports pytest or anthropic. The modules, lowest first (each imports
only modules above it in this list):

* `errors`: `ApiError` and the error bodies; `wire`: compact JSON and ids.
* `media`: image sizes from their headers, PDF pages and their text, and what they cost.
* `cache`: breakpoints, minimums, TTLs and the prompt cache; `validation`: what the API rejects.
* `tools`: built-in tools' system prompts and server tools' results.
* `tokens`: the request cut into billed segments; `replies`: the deterministic reply and its Message.
* `faults`: injected failures, queued or asked for by a marker; `batches`: the Message Batches store.
* `server`: the HTTP handler and `Emulator`; `cli`: `main`, also run by `python -m pytest_costguard.emulator`.
"""

from __future__ import annotations

from .cache import CACHE_MINIMUMS, DEFAULT_CACHE_MINIMUM, MAX_BREAKPOINTS, cache_minimum
from .cli import main
from .errors import ERROR_TYPES, ApiError
from .faults import DEFAULT_SLOW_SECONDS, FAULT_KINDS, Fault, make_fault
from .media import (
    MAX_IMAGE_LONG_EDGE,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_TOKENS,
    MAX_PDF_PAGE_TOKENS,
    PDF_PAGE_IMAGE_TOKENS,
    PDF_PAGE_TEXT_TOKENS,
    ImageSize,
    image_size,
    image_tokens,
    pdf_page_texts,
)
from .replies import MAX_MARKER_OUTPUT
from .server import MAX_REQUEST_BYTES, Clock, Emulator, KnownModel
from .tokens import DEFAULT_URL_PDF_PAGES, MESSAGE_OVERHEAD, count_input_tokens
from .tools import BUILTIN_TOOL_TOKENS, WEB_FETCH_CONTENT_TOKENS, WEB_SEARCH_RESULT_TOKENS
from .validation import validate_request

__all__ = [
    "BUILTIN_TOOL_TOKENS",
    "CACHE_MINIMUMS",
    "DEFAULT_CACHE_MINIMUM",
    "DEFAULT_SLOW_SECONDS",
    "DEFAULT_URL_PDF_PAGES",
    "ERROR_TYPES",
    "FAULT_KINDS",
    "MAX_BREAKPOINTS",
    "MAX_IMAGE_LONG_EDGE",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_TOKENS",
    "MAX_MARKER_OUTPUT",
    "MAX_PDF_PAGE_TOKENS",
    "MAX_REQUEST_BYTES",
    "MESSAGE_OVERHEAD",
    "PDF_PAGE_IMAGE_TOKENS",
    "PDF_PAGE_TEXT_TOKENS",
    "WEB_FETCH_CONTENT_TOKENS",
    "WEB_SEARCH_RESULT_TOKENS",
    "ApiError",
    "Clock",
    "Emulator",
    "Fault",
    "ImageSize",
    "KnownModel",
    "cache_minimum",
    "count_input_tokens",
    "image_size",
    "image_tokens",
    "main",
    "make_fault",
    "pdf_page_texts",
    "validate_request",
]
