"""The command line: serve the emulator until interrupted (`costguard serve`, `python -m pytest_costguard.emulator`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .server import Emulator

__all__ = ["main"]


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Serve the emulator until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local stand-in for Anthropic's Messages API: POST /v1/messages (JSON and SSE), "
        "/v1/messages/count_tokens and /v1/messages/batches, billed by Anthropic's published token rules. "
        "Point a client at it with ANTHROPIC_BASE_URL=http://HOST:PORT (any API key). Control endpoints under "
        "/_emulator/ inject faults and read what was billed.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: 0, a free port)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    emulator = Emulator(args.host, args.port)
    try:
        emulator.start()
    except OSError as exc:
        print(f"costguard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    print(f"costguard emulator listening on http://{args.host}:{emulator.port}", flush=True)
    try:
        emulator.serve_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0
