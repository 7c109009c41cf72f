"""`python -m pytest_costguard.emulator`: serve the emulator (same options as `costguard serve`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m pytest_costguard.emulator"))
