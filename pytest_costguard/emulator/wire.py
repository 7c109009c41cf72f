"""What several parts of the emulator write the same way: compact JSON and the API's identifiers."""

from __future__ import annotations

import json
import secrets
from typing import Any

__all__ = ["compact", "new_id"]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def compact(value: Any) -> str:
    """Return `value` as compact, key-sorted JSON: the form the emulator counts, hashes and keys by."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def new_id(prefix: str, length: int = 24) -> str:
    """Return a fresh identifier shaped like the API's (`msg_01...`, `req_011C...`)."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))
