"""The preflight: count a Messages request's input exactly, before it is admitted, through the caller's client.

The count is `POST /v1/messages/count_tokens` (free, separately rate-limited), sent as a request derived from
the call's own: the middleware hands it to the same `call_next`, so it goes out with the client's base URL,
headers, auth and transport, as one attempt the SDK does not retry and the code under test never sees (its own
middleware sits outside ours). Any failure (an error status, no connection, an answer that is not a count) is
reported as a reason, and the caller falls back to the local bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anthropic import APIRequest

__all__ = ["COUNTED_FIELDS", "PREFLIGHT_TIMEOUT", "count", "count_async", "count_request"]

COUNTED_FIELDS = (
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "cache_control",
    "output_config",
    "speed",
    "mcp_servers",
    "context_management",
)
"""The fields of a Messages request `count_tokens` takes (the SDK's `MessageCountTokensParams`, beta included):
the others (max_tokens, stream, temperature, metadata, ...) would be rejected."""
PREFLIGHT_TIMEOUT = 30.0
"""The longest a count may take (seconds), unless the call's own timeout is shorter."""

Counted = int | str
"""A count's result: the input tokens, or why there is none."""


def count_request(request: APIRequest, body: Mapping[str, Any]) -> APIRequest:
    """Derive, from a Messages call about to be sent with `body`, the request counting its input.

    From a Message Batch creation (`.../messages/batches`), `body` is one of its requests' `params`.
    """
    from anthropic import APIRequest

    path, sep, query = request.url.partition("?")
    path = path.rstrip("/")
    if path.endswith("/batches"):
        path = path[: -len("/batches")]
    url = path + "/count_tokens" + sep + query  # keeps `?beta=true` on beta calls
    timeout = request.timeout
    short = timeout if isinstance(timeout, (int, float)) and 0 < timeout < PREFLIGHT_TIMEOUT else PREFLIGHT_TIMEOUT
    derived = request.copy(url=url, body={k: body[k] for k in COUNTED_FIELDS if k in body}, timeout=short)
    # Not a stream, and parsed as plain JSON: the count is read here and never reaches the caller.
    return APIRequest(options=derived.options, cast_to=object, retries_taken=request.retries_taken)


def _tokens(status: int, body: Callable[[], Any]) -> Counted:
    if not 200 <= status < 300:
        return f"HTTP {status}"
    try:
        data = body()
    except ValueError:
        return "an answer that is not JSON"
    tokens = data.get("input_tokens") if isinstance(data, dict) else None
    if type(tokens) is not int or tokens < 0:
        return "an answer without input_tokens"
    return tokens


def count(request: APIRequest, body: Mapping[str, Any], call_next: Callable[[APIRequest], Any]) -> Counted:
    """Count `body`'s input through `call_next` (the sync client's chain); return the tokens or why not."""
    try:
        response = call_next(count_request(request, body))
    except Exception as exc:  # no connection, a timeout, a transport that does not know the path
        return f"{type(exc).__name__}"
    http = response.http_response
    try:
        if 200 <= http.status_code < 300:
            response.read()
        return _tokens(http.status_code, http.json)
    except Exception as exc:  # the body could not be read
        return f"{type(exc).__name__} reading the count"
    finally:
        http.close()


async def count_async(
    request: APIRequest, body: Mapping[str, Any], call_next: Callable[[APIRequest], Awaitable[Any]]
) -> Counted:
    """Count `body`'s input through `call_next` (the async client's chain); return the tokens or why not."""
    try:
        response = await call_next(count_request(request, body))
    except Exception as exc:
        return f"{type(exc).__name__}"
    http = response.http_response
    try:
        if 200 <= http.status_code < 300:
            await response.read()
        return _tokens(http.status_code, http.json)
    except Exception as exc:
        return f"{type(exc).__name__} reading the count"
    finally:
        await http.aclose()
