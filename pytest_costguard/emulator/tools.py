"""Tools whose cost is not in their definition: built-in tools' system prompts and server tools' results.

* Built-in (client) tools add a fixed system prompt per request, on top of their definition's bytes:
  `BUILTIN_TOOL_TOKENS`, by tool type prefix (computer use: the 466-token system prompt plus its 735-token
  definition; bash 245; text editor 700).
* Server tools run inside the request. Their results are billed as input tokens after the prompt, so
  `count_tokens` cannot know them. The emulator performs one use per server tool, or `N` when the last user
  message holds `[[costguard:web_search=N]]` / `[[costguard:web_fetch=N]]`, never more than the tool's
  `max_uses`, and none with `tool_choice` "none". Each search adds `WEB_SEARCH_RESULT_TOKENS` and counts in
  `usage.server_tool_use.web_search_requests` (priced $10 per 1,000); each fetch adds `WEB_FETCH_CONTENT_TOKENS`,
  at most the tool's `max_content_tokens`, and counts in `web_fetch_requests` (free but for its tokens).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "BUILTIN_TOOL_TOKENS",
    "WEB_FETCH_CONTENT_TOKENS",
    "WEB_SEARCH_RESULT_TOKENS",
    "ServerToolUse",
    "builtin_tool_tokens",
    "server_tool_use",
]

BUILTIN_TOOL_TOKENS: Mapping[str, int] = {
    "computer_": 466 + 735,
    "bash_": 245,
    "text_editor_": 700,
}
"""Tokens a built-in tool adds to every request that offers it, by the prefix of its `type`."""
WEB_SEARCH_RESULT_TOKENS = 2_000
"""Input tokens the results of one emulated web search add."""
WEB_FETCH_CONTENT_TOKENS = 4_000
"""Input tokens one emulated web fetch adds, unless the tool's `max_content_tokens` is lower."""

_USES_MARKER = re.compile(r"\[\[costguard:(web_search|web_fetch)=(\d+)\]\]")


def _tool_type(tool: Mapping[str, Any]) -> str:
    kind = tool.get("type")
    return kind if isinstance(kind, str) else ""


def builtin_tool_tokens(tool: Mapping[str, Any]) -> int:
    """Return the system-prompt tokens a tool definition adds (0 for a custom or server tool)."""
    kind = _tool_type(tool)
    return next((tokens for prefix, tokens in BUILTIN_TOOL_TOKENS.items() if kind.startswith(prefix)), 0)


class ServerToolUse(NamedTuple):
    """What the server tools of one request did, and the input tokens their results add."""

    web_search_requests: int
    web_fetch_requests: int
    tokens: int

    def as_usage(self) -> dict[str, int]:
        """Return the `usage.server_tool_use` object."""
        return {"web_search_requests": self.web_search_requests, "web_fetch_requests": self.web_fetch_requests}


def server_tool_use(body: Mapping[str, Any], marker_text: str) -> ServerToolUse | None:
    """Return what the server tools of a request do, or None when it offers none."""
    tools = [tool for tool in body.get("tools") or [] if _tool_type(tool).startswith(("web_search_", "web_fetch_"))]
    if not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "none":
        return ServerToolUse(0, 0, 0)
    asked = {name: int(count) for name, count in _USES_MARKER.findall(marker_text)}
    searches = fetches = tokens = 0
    for tool in tools:
        family = "web_search" if _tool_type(tool).startswith("web_search_") else "web_fetch"
        uses = asked.get(family, 1)
        max_uses = tool.get("max_uses")
        if isinstance(max_uses, int) and not isinstance(max_uses, bool):
            uses = min(uses, max(max_uses, 0))
        if family == "web_search":
            searches += uses
            tokens += uses * WEB_SEARCH_RESULT_TOKENS
        else:
            fetched = WEB_FETCH_CONTENT_TOKENS
            cap = tool.get("max_content_tokens")
            if isinstance(cap, int) and not isinstance(cap, bool):
                fetched = min(fetched, max(cap, 0))
            fetches += uses
            tokens += uses * fetched
    return ServerToolUse(searches, fetches, tokens)
