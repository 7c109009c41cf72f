"""The cassette file: one test's recorded HTTP interactions, as versioned, human-readable, diff-friendly JSON.

A JSON body is kept as structured data and an event stream (SSE) event by event, so a reviewer reads a
recording as the API sent it and a diff shows what changed. `body_bytes` turns a stored body back into the
bytes the SDK parses: for a stream, the same events in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "FORMAT",
    "Cassette",
    "CassetteError",
    "Interaction",
    "body_bytes",
    "cassette_path",
    "now",
    "safe_name",
    "stored_body",
]

FORMAT = "pytest-costguard-cassette/1"
"""The format version every cassette names; a file naming another is refused, not guessed at."""

_SSE_STARTS = (b"event:", b"data:", b"id:", b"retry:", b":")
_SEPARATOR = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class CassetteError(ValueError):
    """A cassette that cannot be read: the message names the file."""


def now() -> str:
    """The current UTC time as the cassettes write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Interaction:
    """One HTTP attempt and what came back (redacted before it is made: see `redaction.py`)."""

    method: str
    """The HTTP method, upper case."""
    path: str
    """The request's path and query, without scheme and host (a recording made against an emulator on a
    random port replays against any host)."""
    body: Any
    """The request's JSON body (None for a request without one)."""
    status: int | None
    """The response status; None when the attempt got no response (a connection failure)."""
    response: Mapping[str, Any] = field(default_factory=dict)
    """The response body as stored: `{"json": ...}`, `{"events": [...]}` or `{"text": ...}` (see `stored_body`)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers the client may act on (content type, retry hints, request id), redacted."""
    request_headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers, redacted (for a reader: matching never looks at them)."""
    error: Mapping[str, str] | None = None
    """How the transport failed, when it did: `{"kind": "connect" | "timeout" | "read", "message": ...}`;
    with a status, the body broke off after what `response` holds."""
    provider: str = "anthropic"
    """Whose API answered: picks the adapter that prices it (`costguard cassettes`)."""
    recorded_at: str = ""
    """When it was recorded (UTC, ISO 8601)."""

    def to_json(self) -> dict[str, Any]:
        """The interaction as it is written to the file."""
        request: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.request_headers:
            request["headers"] = dict(self.request_headers)
        request["body"] = self.body
        out: dict[str, Any] = {"provider": self.provider, "recorded_at": self.recorded_at, "request": request}
        if self.status is not None:
            out["response"] = {"status": self.status, "headers": dict(self.headers), **self.response}
        if self.error is not None:
            out["error"] = dict(self.error)
        return out

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Interaction:
        """Read an interaction back, refusing a shape this version does not write."""
        if not isinstance(data, Mapping) or not isinstance(data.get("request"), Mapping):
            raise CassetteError(f"{where}: an interaction needs a 'request' object")
        request = data["request"]
        method, path = request.get("method"), request.get("path")
        if not isinstance(method, str) or not isinstance(path, str):
            raise CassetteError(f"{where}: a request needs a 'method' and a 'path'")
        response = data.get("response")
        status: int | None = None
        stored: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if response is not None:
            if not isinstance(response, Mapping) or type(response.get("status")) is not int:
                raise CassetteError(f"{where}: a response needs an integer 'status'")
            status = response["status"]
            headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
            stored = {k: response[k] for k in ("json", "events", "text") if k in response}
            if len(stored) > 1:
                raise CassetteError(f"{where}: a response body is one of 'json', 'events' or 'text'")
            if "events" in stored and not isinstance(stored["events"], list):
                raise CassetteError(f"{where}: 'events' must be a list")
            if "text" in stored and not isinstance(stored["text"], str):
                raise CassetteError(f"{where}: 'text' must be a string")
        error = data.get("error")
        if error is not None and not (isinstance(error, Mapping) and isinstance(error.get("kind"), str)):
            raise CassetteError(f"{where}: an 'error' needs a 'kind'")
        if status is None and error is None:
            raise CassetteError(f"{where}: an interaction has a 'response', an 'error' or both")
        return cls(
            method=method.upper(),
            path=path,
            body=request.get("body"),
            status=status,
            response=stored,
            headers=headers,
            request_headers={str(k): str(v) for k, v in (request.get("headers") or {}).items()},
            error=None if error is None else {str(k): str(v) for k, v in error.items()},
            provider=str(data.get("provider") or "anthropic"),
            recorded_at=str(data.get("recorded_at") or ""),
        )


@dataclass(frozen=True, slots=True)
class Cassette:
    """One test's recordings, in the order they were made."""

    test: str
    """The node id of the test that recorded it."""
    interactions: tuple[Interaction, ...] = ()
    """What it recorded."""
    recorded_at: str = ""
    """When the file was last written (UTC)."""

    def dumps(self) -> str:
        """The file's text: indented JSON, keys in a fixed order, one trailing newline."""
        data = {
            "format": FORMAT,
            "test": self.test,
            "recorded_at": self.recorded_at,
            "interactions": [i.to_json() for i in self.interactions],
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, text: str, *, where: str) -> Cassette:
        """Parse a file's text (`where` names it in errors)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CassetteError(f"{where}: not a cassette (not JSON: {exc})") from None
        if not isinstance(data, Mapping) or "format" not in data:
            raise CassetteError(f"{where}: not a pytest-costguard cassette (no 'format')")
        if data["format"] != FORMAT:
            raise CassetteError(f"{where}: format {data['format']!r} is not {FORMAT!r}; record it again")
        items = data.get("interactions")
        if not isinstance(items, list):
            raise CassetteError(f"{where}: 'interactions' must be a list")
        interactions = tuple(
            Interaction.from_json(item, where=f"{where} interaction {n}") for n, item in enumerate(items, start=1)
        )
        return cls(str(data.get("test") or ""), interactions, str(data.get("recorded_at") or ""))

    @classmethod
    def load(cls, path: Path) -> Cassette:
        """Read a cassette file."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CassetteError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
        return cls.loads(text, where=str(path))

    def save(self, path: Path) -> None:
        """Write the cassette atomically (a crash leaves the old file or the new one, never half of one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        os.replace(tmp, path)


# -- bodies ------------------------------------------------------------------------------------------------
def stored_body(content: bytes) -> dict[str, Any]:
    """Store a response body readably: JSON as data, an event stream event by event, anything else as text."""
    if not content.strip():
        return {"text": content.decode("utf-8", "replace")} if content else {}
    if content.lstrip().startswith(_SSE_STARTS):
        return {"events": _events(content)}
    try:
        return {"json": json.loads(content)}
    except ValueError:
        return {"text": content.decode("utf-8", "replace")}


def body_bytes(stored: Mapping[str, Any]) -> bytes:
    """The bytes a stored body stands for (an event stream as the same events, in the same order)."""
    if "json" in stored:
        return json.dumps(stored["json"], ensure_ascii=False, separators=(",", ":")).encode()
    if "events" in stored:
        return b"".join(_event_bytes(event) for event in stored["events"])
    return str(stored.get("text", "")).encode()


def _events(content: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    pieces = _SEPARATOR.split(content)
    # What follows the last separator is an event the stream broke off in (empty when it ended cleanly).
    complete, tail = pieces[:-1], pieces[-1]
    for raw in complete:
        event: dict[str, Any] = {}
        data_lines: list[str] = []
        for line in raw.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event["event"] = value
            elif name == "data":
                data_lines.append(value)
            elif name in ("id", "retry"):
                event[name] = value
        if not data_lines and not event:
            continue  # a comment or keep-alive line: nothing the client acts on
        if data_lines:
            text = "\n".join(data_lines)
            try:
                event["data"] = json.loads(text)
            except ValueError:
                event["text"] = text
        events.append(event)
    if tail.strip():
        events.append({"partial": tail.decode("utf-8", "replace")})
    return events


def _event_bytes(event: Mapping[str, Any]) -> bytes:
    if "partial" in event:
        return str(event["partial"]).encode()
    lines = []
    if "event" in event:
        lines.append(f"event: {event['event']}")
    for name in ("id", "retry"):
        if name in event:
            lines.append(f"{name}: {event[name]}")
    if "data" in event:
        lines.append("data: " + json.dumps(event["data"], ensure_ascii=False, separators=(",", ":")))
    elif "text" in event:
        lines.extend(f"data: {line}" for line in str(event["text"]).split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


# -- where a test's cassette lives ---------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]]")


def safe_name(name: str, *, limit: int = 120) -> str:
    """Turn a test's name (parametrized ids and all) into a file name every file system accepts.

    Characters outside letters, digits, `_ . - [ ]` become `_`; a name that had to change (or was cut to
    `limit`) gets a short hash of the original, so two ids that differ only in such characters never share a file.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(".") or "_"
    if cleaned == name and len(name) <= limit:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{cleaned[:limit]}-{digest}"


def cassette_path(nodeid: str, *, rootdir: Path, directory: Path | None = None) -> Path:
    """Where the test `nodeid` keeps its cassette.

    By default beside its module: `<module's folder>/cassettes/<module>/<test>.json`. With `directory`
    (`--llm-cassettes`), under it, by the module's path from the rootdir: `<directory>/<path/to/module>/<test>.json`.
    """
    module, _, test = nodeid.partition("::")
    test = test.replace("::", ".") or "module"
    module_path = PurePosixPath(module)
    stem = module_path.stem if module_path.suffix == ".py" else module_path.name
    if directory is None:
        folder = rootdir.joinpath(*module_path.parent.parts) / "cassettes" / safe_name(stem)
    else:
        parts = [safe_name(p) for p in module_path.parent.parts if p not in ("", ".", "..")]
        folder = directory.joinpath(*parts, safe_name(stem))
    return folder / f"{safe_name(test)}.json"


def cassette_files(folder: Path) -> Sequence[Path]:
    """Every cassette file under `folder`, sorted."""
    return sorted(p for p in folder.rglob("*.json") if p.is_file() and not p.name.startswith("."))
