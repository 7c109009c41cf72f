from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_support import RedisServer

FAKEAPI_SOURCE = (Path(__file__).parent / "fakeapi.py").read_text(encoding="utf-8")


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's pytester, whose inner runs leave out Hypothesis' plugin (no inner suite uses Hypothesis).

    Its terminal summary imports all of Hypothesis, about 1 s of CPU in every inner run in a subprocess (as
    much as the rest of an idle run's start-up). A fixture that sets more inner options adds them with
    `monkeypatch.setenv("PYTEST_ADDOPTS", ..., prepend=" ")`, keeping this one.
    """
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    return pytester


@pytest.fixture
def fake_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose inner suite can `from fakeapi import FakeAPI`."""
    # Inner suites need no async plugin (pytest-asyncio warns about its unset loop scope in them).
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio", prepend=" ")
    pytester.makepyfile(fakeapi=FAKEAPI_SOURCE)
    pytester.syspathinsert()
    return pytester


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RedisServer]]:
    """Start `redis-server`s on loopback on demand; every one is stopped when the session ends."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_servers: Callable[[], RedisServer]) -> RedisServer:
    """One server shared by the tests of a session (each test uses budget names of its own)."""
    return redis_servers()


@pytest.fixture
def redis_key() -> str:
    """A budget name of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _outside_any_metered_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs start outside any session: this suite's own run, when metered, does not meter them."""
    from pytest_costguard.metering.children import ENV

    monkeypatch.delenv(ENV, raising=False)
