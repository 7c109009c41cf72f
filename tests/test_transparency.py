"""Metering on, the code under test sees the SDK's own behaviour: what the SDK's test suite showed (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakeapi import FakeAPI

from pytest_costguard import CostGuard
from pytest_costguard.providers.anthropic import patch

REQUEST = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def guard() -> Iterator[CostGuard]:
    guard = CostGuard()
    patch.install(guard)
    try:
        yield guard
    finally:
        patch.uninstall(guard)
    assert not patch.is_patched()


def _recorder(name: str, seen: list[str]) -> Any:
    def middleware(request: Any, call_next: Any) -> Any:
        seen.append(name)
        return call_next(request)

    return middleware


def test_the_public_middleware_chain_is_the_users_own(guard: CostGuard) -> None:
    api = FakeAPI()
    mine = _recorder("mine", [])
    assert api.client().middleware == ()
    assert api.client(middleware=[mine]).middleware == (mine,)

    async def mine_async(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    assert api.async_client(middleware=[mine_async]).middleware == (mine_async,)


def test_a_client_derived_from_the_public_chain_is_still_metered_once(guard: CostGuard) -> None:
    api = FakeAPI()
    seen: list[str] = []
    outer, inner = _recorder("outer", seen), _recorder("inner", seen)
    client = api.client(middleware=[outer])
    derived = client.with_options(middleware=[*client.middleware, inner])
    assert derived.middleware == (outer, inner)
    derived.messages.create(**REQUEST)
    assert seen == ["outer", "inner"]
    assert len(guard.records) == 1


def test_middleware_added_with_with_middleware_runs_outside_the_meter(guard: CostGuard) -> None:
    api = FakeAPI()
    cached = object()

    def short_circuit(request: Any, call_next: Any) -> Any:
        del request, call_next
        return cached  # a cache answering without a request: nothing is sent, nothing to meter

    client = api.client().with_middleware(short_circuit)
    assert client.middleware == (short_circuit,)
    assert client.messages.create(**REQUEST) is cached
    assert api.requests == [] and guard.records == []


def test_restore_gives_the_sdk_its_own_middleware_property_back() -> None:
    import anthropic._base_client as base

    original = base.BaseClient.__dict__["middleware"]
    patch.prepare()
    try:
        assert base.BaseClient.__dict__["middleware"] is not original
        patch.prepare()  # twice: still one filter, undone by one restore
    finally:
        patch.restore()
    assert base.BaseClient.__dict__["middleware"] is original
    assert not patch.is_patched()


def test_a_messages_post_cast_to_a_bare_response_is_returned_and_metered(guard: CostGuard) -> None:
    import httpx2

    api = FakeAPI()
    response = api.client().post("/v1/messages", body=REQUEST, cast_to=httpx2.Response)
    assert isinstance(response, httpx2.Response) and response.status_code == 200
    assert len(api.billed) == 1 and len(guard.records) == 1
