"""A local stand-in for Anthropic's Messages API: run LLM test suites offline and rehearse outages.

The emulator speaks the real wire format (JSON replies, server-sent events, error bodies, status codes), so
the real `anthropic` SDK can be pointed at it with `base_url`. Everything it answers is deterministic:

* Input tokens. The request is cut into segments: each tool definition (compact JSON without its
  `cache_control`), each system block and each message content block (a string content is one block).
  A segment of `b` UTF-8 bytes of text counts `ceil(b / 4)` tokens; the first segment of every message also
  counts a template overhead of `min(3, b - ceil(b / 4))`. Each segment therefore counts at most its own
  bytes, so the input tokens reported (uncached + cache writes + cache reads) never exceed the UTF-8 bytes of
  the request's text: the plugin's worst-case bound relies on it. The text of a block is its `text`; a
  tool_use block's name and compact JSON input; a tool_result's text content; a thinking block's thinking.
  Inline media count `ceil(len(base64 data) / 4)` tokens (images capped at 1,600); media by URL or file id
  count 1,600 (image) or 2,000 (document) tokens.
* Output. The reply is a sentence of three-letter words chosen from a hash of the request's model, system,
  messages and tools. Every word plus its trailing space or final full stop is 4 bytes and exactly one output
  token, so `ceil(utf8_len / 4)` of the text is its token count. A reply has 8 to 31 tokens, or exactly `N`
  when the last user message contains `[[costguard:output=N]]`. It is cut at `max_tokens` (stop_reason
  "max_tokens"), else stop_reason is "end_turn".
* Prompt caching. Breakpoints are the `cache_control` marks on tools, system blocks and message content
  blocks, plus a top-level `cache_control` that marks the last block. A breakpoint's prefix (everything up to
  and including its block, keyed by model and content) is cacheable when it holds at least the model's minimum
  (`CACHE_MINIMUMS`). The longest cached prefix is a cache read; the tokens from there to the last cacheable
  breakpoint are a cache write, split 5m/1h by the TTL of the breakpoint closing each stretch; the rest is
  uncached input. Entries expire after their TTL and each hit refreshes them. More than 4 breakpoints, or a
  1h breakpoint after a 5m one, is a 400.
* Faults. Queued with `Emulator.inject` or `POST /_emulator/faults`, or triggered by a marker in the request
  text, `[[costguard:fault=KIND]]` (every attempt fails) or `[[costguard:fault=KINDxN]]` (the first N attempts
  of that exact request body fail), optionally with parameters: `[[costguard:fault=429x2,retry_after=0.01]]`.
* Billing. Every response that delivered a message is appended to the ledger (`Emulator.billed`,
  `GET /_emulator/billed`) with the usage the API would bill; failed attempts (4xx/5xx) are not.

Standard library only: no module here imports pytest or anthropic. The modules, lowest first (each imports
only the ones above it):

* `errors`: `ApiError` and the error bodies; `wire`: compact JSON and ids.
* `cache`: breakpoints, minimums, TTLs and the prompt cache; `validation`: what the API rejects.
* `tokens`: the request cut into billed segments; `replies`: the deterministic reply and its Message.
* `faults`: injected failures, queued or asked for by a marker.
* `server`: the HTTP handler and `Emulator`; `cli`: `main`, also run by `python -m pytest_costguard.emulator`.
"""

from __future__ import annotations

from .cache import CACHE_MINIMUMS, DEFAULT_CACHE_MINIMUM, MAX_BREAKPOINTS, cache_minimum
from .cli import main
from .errors import ERROR_TYPES, ApiError
from .faults import DEFAULT_SLOW_SECONDS, FAULT_KINDS, Fault, make_fault
from .replies import MAX_MARKER_OUTPUT
from .server import MAX_REQUEST_BYTES, Clock, Emulator, KnownModel
from .tokens import MESSAGE_OVERHEAD, count_input_tokens
from .validation import validate_request

__all__ = [
    "CACHE_MINIMUMS",
    "DEFAULT_CACHE_MINIMUM",
    "DEFAULT_SLOW_SECONDS",
    "ERROR_TYPES",
    "FAULT_KINDS",
    "MAX_BREAKPOINTS",
    "MAX_MARKER_OUTPUT",
    "MAX_REQUEST_BYTES",
    "MESSAGE_OVERHEAD",
    "ApiError",
    "Clock",
    "Emulator",
    "Fault",
    "KnownModel",
    "cache_minimum",
    "count_input_tokens",
    "main",
    "make_fault",
    "validate_request",
]
