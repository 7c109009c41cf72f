"""Root conftest of pytest-costguard's own test suite.

respx patches `httpx`; the anthropic SDK is built on httpx2. Aliasing must happen before anything imports httpx,
so it is done here, for our tests only, never inside the library.
"""

from __future__ import annotations

import httpx2

httpx2.alias_httpx()

# respx's entry-point plugin is disabled in addopts (it imports httpx before this file runs); load it
# again here, after the alias, so its `respx_mock` fixture patches the httpx2 the SDK uses.
pytest_plugins = ["pytester", "respx.plugin"]
