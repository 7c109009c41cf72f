"""What never reaches a cassette: credentials in headers, and API keys of known shapes anywhere in a body.

Redaction happens when an interaction is made, before anything is written. Headers are redacted by name
(`x-api-key`, `authorization`, cookies, organization and project headers, anything ending in `-api-key`) and
by value (a value shaped like a key); bodies by value only: every string is searched for key shapes, keys and
numbers are never touched, so `max_tokens` and the usage counts stay as the API sent them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "find_secrets", "is_secret_header", "redact_body", "redact_headers", "redact_text"]

REDACTED = "[REDACTED]"

KEY_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Anthropic API key", r"sk-ant-[A-Za-z0-9_\-]{16,}"),
        ("OpenAI API key", r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,}"),
        ("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("Google API key", r"AIza[0-9A-Za-z_\-]{35}"),
        ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        ("Slack token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
        ("Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}"),
        ("Groq API key", r"\bgsk_[A-Za-z0-9]{40,}"),
        ("xAI API key", r"\bxai-[A-Za-z0-9]{40,}"),
        ("bearer token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*"),
    )
)
"""Shapes of credentials found in the wild: (what it is, its pattern)."""

_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "anthropic-organization-id",
        "openai-organization",
        "openai-project",
        "x-goog-api-key",
        "x-amz-security-token",
    }
)
_SECRET_SUFFIXES = (
    "-api-key",
    "-auth-token",
    "-session-token",
    "-organization",
    "-organization-id",
    "-project",
    "-project-id",
    "-secret",
)


def is_secret_header(name: str) -> bool:
    """Whether a header carries credentials or identifies an account (its value is never stored)."""
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or "cookie" in lowered or lowered.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    """`text` with every key-shaped part replaced by `[REDACTED]`."""
    if len(text) < 16:
        return text  # shorter than any key shape: the common case for short strings, decided at once
    for _, pattern in KEY_SHAPES:
        text = pattern.sub(REDACTED, text)
    return text


def redact_body(value: Any) -> Any:
    """A JSON value with key-shaped strings redacted wherever they are; keys, numbers and booleans untouched."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_body(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_body(v) for v in value]
    return value


def redact_headers(headers: Iterable[tuple[str, str]], *, drop: Iterable[str] = ()) -> dict[str, str]:
    """Headers with credentials redacted, lower-cased names, `drop` (volatile headers) left out."""
    dropped = {d.lower() for d in drop}
    out: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in dropped or lowered.startswith("x-stainless-"):
            continue
        out[lowered] = REDACTED if is_secret_header(lowered) else redact_text(value)
    return out


def find_secrets(text: str, *, headers: Iterable[Mapping[str, str]] = ()) -> list[str]:
    """Describe every credential in a file's `text` (and in the parsed `headers` maps): empty when it is clean."""
    found = []
    for name, pattern in KEY_SHAPES:
        for match in pattern.finditer(text):
            shown = match.group(0)
            found.append(f"{name} {shown[:8]}... at offset {match.start()}")
    for mapping in headers:
        for header, value in mapping.items():
            if is_secret_header(header) and value != REDACTED:
                found.append(f"header {header!r} stored unredacted")
    return found
