"""The OpenAI SDK adapter: every client's HTTP attempts go through the cost guard (see `patch.py` for where).

`patch` is light and imports nothing heavy; `meter` (pricing, the guard) loads on the first metered attempt.
"""

from __future__ import annotations

from .patch import install, is_installed, is_patched, restore, uninstall

__all__ = ["install", "is_installed", "is_patched", "restore", "uninstall"]
