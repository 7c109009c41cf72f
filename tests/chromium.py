"""Headless Chromium, driven from the command line alone: the DOM after scripts ran, console messages, screenshots.

No browser-automation package: `--dump-dom` prints the document once the page's scripts have run (with
`--virtual-time-budget`, timers such as the filter's debounce fire too), `--enable-logging=stderr --v=0`
prints every console message, uncaught exception and Content-Security-Policy violation as a `CONSOLE` line,
and `--screenshot` saves the viewport. The tests use it, and so does the screenshot in docs/reports.md:

    python tests/chromium.py REPORT.html docs/img/report.png [--hash 'view=calls'] [--size 1280x1800]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BROWSERS", "Page", "find_chromium", "load"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
"""Binaries looked for on PATH (the Debian package is `chromium`); COSTGUARD_CHROMIUM names another."""

_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?(?::\d+)?\] (.*)")


def find_chromium() -> str | None:
    """Return the path of a Chromium binary, or None when none is installed."""
    named = os.environ.get("COSTGUARD_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Page:
    """What Chromium made of a page."""

    dom: str
    """The serialized document after the page's scripts ran (empty when only a screenshot was asked for)."""
    console: list[str]
    """Every console message, uncaught exception and CSP violation, as Chromium logged them."""


def load(
    page: Path,
    *,
    fragment: str = "",
    screenshot: Path | None = None,
    size: tuple[int, int] = (1280, 1800),
    budget_ms: int = 5000,
    timeout: float = 120,
) -> Page:
    """Open `page` (a local file) in headless Chromium: return its DOM and console, optionally save a screenshot."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium binary found (install the Debian package `chromium`)")
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory(prefix="costguard-chromium-") as profile:
        args = [
            binary,
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
        ]
        args += [f"--screenshot={screenshot.resolve()}"] if screenshot is not None else ["--dump-dom"]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    console = [m.group(1) for m in map(_CONSOLE.search, done.stderr.splitlines()) if m]
    return Page(dom="" if screenshot is not None else done.stdout, console=console)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot an HTML report in headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--hash", default="", help="URL fragment, e.g. 'view=calls&sort=cost'")
    parser.add_argument("--size", default="1280x1800", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = load(args.page, fragment=args.hash, screenshot=args.out, size=(width, height))
    for line in result.console:
        print(f"console: {line}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if result.console else 0


if __name__ == "__main__":
    sys.exit(main())
