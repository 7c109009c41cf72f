"""What every provider adapter shares: patching an SDK module when it is imported, the stack of installed
guards, and watching a response body's bytes as they pass to the caller.

Light at import (the SDK patches import this at pytest start-up): httpx2 is imported only by the functions
that handle a response.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..metering.guard import CostGuard, Ticket

    GuardOrFactory: TypeAlias = "CostGuard | Callable[[], CostGuard | None]"
    """A `CostGuard`, or a callable that returns one (a factory, or a getter)."""

__all__ = [
    "SSE_STARTS",
    "BodyTap",
    "ImportHook",
    "drop_guard",
    "getter",
    "metered_stream",
    "reached_the_server",
    "watched_stream",
]

SSE_STARTS = (b"event:", b"data:", b"id:", b"retry:", b":")
"""How an event stream's first line begins: a body is told apart by its bytes, not its headers."""


def getter(guard: GuardOrFactory) -> Callable[[], CostGuard | None]:
    """What the adapter calls for the guard: a guard is not callable, so a callable is a factory (or a getter)."""
    return guard if callable(guard) else (lambda: guard)


def drop_guard(guards: list[tuple[Any, Callable[[], CostGuard | None]]], guard: GuardOrFactory | None) -> None:
    """Remove `guard` (the innermost one when None) from an installed-guards stack."""
    if guard is None:
        if guards:
            guards.pop()
        return
    for index in range(len(guards) - 1, -1, -1):
        if guards[index][0] == guard:  # ==: a bound method is a new object on every access
            del guards[index]
            return


class ImportHook(ABC):
    """A meta-path finder that calls `patch` on the module `target` each time it is imported (while installed).

    A provider subclasses it to name its target and its patch; `install` / `remove` come in pairs.
    """

    target = ""
    """The module to patch (the SDK's base client module)."""

    @abstractmethod
    def patch(self, module: Any) -> None:
        """Patch the freshly executed module."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.target:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            if self.installed:  # not removed in the meantime
                self.patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    @property
    def installed(self) -> bool:
        """Whether the hook is on `sys.meta_path`."""
        return self in sys.meta_path

    def install(self) -> None:
        """Put the hook first on `sys.meta_path` (once)."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        """Take the hook off `sys.meta_path`."""
        while self in sys.meta_path:
            sys.meta_path.remove(self)


# -- response bodies -----------------------------------------------------------------------------------------
class _Meter(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


class BodyTap:
    """Follow a successful response's body as the caller gets it: an event stream event by event (fed to
    `sse`), anything else kept whole for `finish` (which a provider's meter defines) to read."""

    __slots__ = ("_body", "_done", "_guard", "_kind", "_sse", "_ticket")

    def __init__(self, guard: CostGuard, ticket: Ticket, sse: Any) -> None:
        self._guard = guard
        self._ticket = ticket
        self._kind: str | None = None
        self._body: list[bytes] = []
        self._sse = sse
        self._done = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body, as the caller gets them."""
        if self._kind == "sse":
            self._sse.feed(chunk)
            return
        if self._kind is None:
            self._body.append(chunk)
            head = b"".join(self._body).lstrip()
            if not head:
                return  # only whitespace so far: undecided
            self._kind = "sse" if head.startswith(SSE_STARTS) else "json"
            if self._kind == "json":
                return
            chunk, self._body = b"".join(self._body), []
        if self._kind == "sse":
            self._sse.feed(chunk)
        else:
            self._body.append(chunk)


_stream_classes: dict[tuple[bool, bool], type[Any]] = {}
"""The wrapper classes, by (asynchronous, whether the wrapped body has a `stream_observer`)."""


def watched_stream(
    inner: Any,
    feed: Callable[[bytes], None],
    ended: Callable[[BaseException | None], None],
    *,
    asynchronous: bool,
) -> Any:
    """Wrap an httpx2 byte stream: `feed` sees each chunk as the caller reads it; `ended` is told once, when the
    stream is closed, with the transport error that broke it off (None when none did)."""
    key = (asynchronous, hasattr(inner, "stream_observer"))
    cls = _stream_classes.get(key)
    if cls is None:
        cls = _stream_classes[key] = _make_stream_class(*key)
    return cls(inner, feed, ended)


def metered_stream(inner: Any, meter: _Meter, *, asynchronous: bool) -> Any:
    """Wrap an httpx2 byte stream so `meter` sees each chunk, and is finished when the stream is closed."""
    return watched_stream(inner, meter.feed, lambda _error: meter.finish(), asynchronous=asynchronous)


def _make_stream_class(asynchronous: bool, observed: bool) -> type[Any]:
    """The wrapper class: `observed`, it shows the wrapped body's `stream_observer` too.

    A wrapper shows what httpx2 and the SDKs read from a body, as the wrapped body's, the way the anthropic
    SDK's own tracing wrapper (`_tracing.SpanEndingStream`) does: `elapsed` (`httpx2.Response.elapsed` reads it
    from `response.stream`) and, only around a body that has one, the tracing `stream_observer`, which the SDK's
    `Stream` looks for on every event (`Stream._observer`). So `hasattr(response.stream, "stream_observer")` is
    what it is without the meter. No `__getattr__`: with one, every lookup of an attribute the wrapper lacks
    builds and formats an AttributeError twice (the wrapper's, then the body's) and runs a Python frame, and the
    SDK's lookup of an absent observer, once per event, was 5% of a streamed call's instructions.
    """
    import httpx2

    class _Watched:
        def __init__(
            self, inner: Any, feed: Callable[[bytes], None], ended: Callable[[BaseException | None], None]
        ) -> None:
            self._inner, self._feed, self._ended = inner, feed, ended
            self._error: BaseException | None = None
            self._done = False

        def _end(self) -> None:
            if not self._done:
                self._done = True
                self._ended(self._error)

        @property
        def elapsed(self) -> Any:
            """The wrapped body's `elapsed` (an AttributeError when it has none, as the body's own lookup)."""
            return self._inner.elapsed

    class _Observed(_Watched):
        @property
        def stream_observer(self) -> Any:
            """The wrapped body's tracing observer (the anthropic SDK's `Stream` tells it each event)."""
            return self._inner.stream_observer

    base = _Observed if observed else _Watched  # mypy takes no computed base class: hence the ignores below

    if asynchronous:

        class AsyncWatchedStream(base, httpx2.AsyncByteStream):  # type: ignore[valid-type,misc]
            async def __aiter__(self) -> AsyncIterator[bytes]:
                feed = self._feed
                try:
                    async for chunk in self._inner:
                        feed(chunk)
                        yield chunk
                except httpx2.TransportError as exc:
                    self._error = exc
                    raise

            async def aclose(self) -> None:
                try:
                    await self._inner.aclose()
                finally:
                    self._end()

        return AsyncWatchedStream

    class WatchedStream(base, httpx2.SyncByteStream):  # type: ignore[valid-type,misc]
        def __iter__(self) -> Iterator[bytes]:
            feed = self._feed
            try:
                for chunk in self._inner:
                    feed(chunk)
                    yield chunk
            except httpx2.TransportError as exc:
                self._error = exc
                raise

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._end()

    return WatchedStream


def reached_the_server(exc: BaseException) -> bool:
    """Return whether an attempt failed after its whole request was sent (so the API may have billed it)."""
    import httpx2

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # a chain can be a cycle (a re-raised side effect)
        seen.add(id(current))
        if isinstance(current, (httpx2.ReadTimeout, httpx2.ReadError, httpx2.RemoteProtocolError)):
            return True
        if isinstance(current, httpx2.TransportError):
            return False  # could not connect, or could not finish sending: nothing to bill
        current = current.__cause__ or current.__context__
    return False
