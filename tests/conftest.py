from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FAKEAPI_SOURCE = (Path(__file__).parent / "fakeapi.py").read_text(encoding="utf-8")


@pytest.fixture
def fake_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose inner suite can `from fakeapi import FakeAPI`."""
    # Inner suites need no async plugin, and pytest-asyncio warns about its unset loop scope in them.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio")
    pytester.makepyfile(fakeapi=FAKEAPI_SOURCE)
    pytester.syspathinsert()
    return pytester


class RedisServer:
    """A `redis-server` of our own on loopback: a random free port, no persistence."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or start again, empty) on the same port, and wait until it answers."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: what a crashed or lost server looks like) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
