"""Give every Anthropic client a middleware that does nothing, to tell the SDK's behaviour from the plugin's.

Loaded by hand, in the unpacked suite's folder, with this folder on PYTHONPATH:
`PYTHONPATH=<repo>/compat python -m pytest -p no:costguard -p noop_middleware tests/test_middleware.py`.
A test that differs in the metered run and differs the same way here does so
because the SDK behaves differently once a client has any middleware at all (`compat/known_differences.json`
says which SDK lines), not because of what pytest-costguard's middleware does.
"""

from __future__ import annotations

import functools
from typing import Any

import anthropic
from anthropic import _base_client


class NoOp(anthropic.Middleware):
    """Pass each attempt on, untouched, and return what comes back."""

    def handle(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        return call_next(request)

    async def handle_async(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        return await call_next(request)


_NOOP = NoOp()


def _add_noop(original: Any) -> Any:
    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        chain = tuple(entry for entry in kwargs.get("middleware") or () if entry is not _NOOP)
        kwargs["middleware"] = (*chain, _NOOP)
        original(self, *args, **kwargs)

    return init


for _cls in (_base_client.SyncAPIClient, _base_client.AsyncAPIClient):
    _cls.__init__ = _add_noop(_cls.__init__)  # type: ignore[method-assign]
