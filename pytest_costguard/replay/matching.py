"""Which recording answers a request: the normalized request, never its position alone.

Two requests match when their method, path and JSON body are the same once the body is normalized: key order
does not count, fields that differ on every run (`metadata.user_id` by default) are left out, and API keys a
body carries are redacted as they are in the file. Identical requests are answered in the order they were
recorded (`store.Tape` keeps one queue per key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .redaction import redact_body

__all__ = ["DEFAULT_IGNORED", "first_difference", "normalized_body", "parse_ignored", "request_key"]

DEFAULT_IGNORED: tuple[str, ...] = ("metadata.user_id",)
"""Body fields left out of matching unless configured otherwise (`llm_record_ignore`)."""


def parse_ignored(lines: Iterable[str], *, source: str) -> tuple[str, ...]:
    """Read dotted field paths (`metadata.user_id`), one a line; raise ValueError naming `source` on a bad one."""
    paths = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if any(not part or part.isspace() for part in line.split(".")) or " " in line:
            raise ValueError(f"{source} line {number}: {line!r} is not a dotted field path like metadata.user_id")
        paths.append(line)
    return tuple(paths)


def _without(value: Any, path: list[str]) -> Any:
    if isinstance(value, list):
        return [_without(item, path) for item in value]  # a path reaches into every element of a list
    if not isinstance(value, Mapping) or path[0] not in value:
        return value
    if len(path) == 1:
        return {k: v for k, v in value.items() if k != path[0]}
    return {**value, path[0]: _without(value[path[0]], path[1:])}


def normalized_body(body: Any, ignored: Iterable[str] = DEFAULT_IGNORED) -> Any:
    """The body as matching sees it: redacted, with the ignored fields left out."""
    body = redact_body(body)
    for dotted in ignored:
        body = _without(body, dotted.split("."))
    return body


def request_key(method: str, path: str, body: Any, ignored: Iterable[str] = DEFAULT_IGNORED) -> str:
    """A digest that is equal for two requests exactly when they match."""
    canonical = json.dumps(
        [method.upper(), path, normalized_body(body, ignored)],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The path of the first place two JSON values differ (`messages[0].content`), or None when they are equal."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            here = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                return here
            found = first_difference(a[key], b[key], here)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for index, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{where}[{index}]")
            if found is not None:
                return found
        return None if len(a) == len(b) else f"{where}[{min(len(a), len(b))}]"
    return None if a == b else (where or "the body")
