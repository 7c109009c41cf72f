"""Record and replay: LLM calls answered from cassettes, one file per test, matched by request body.

Provider-neutral: a cassette holds HTTP interactions (a request's method, path and JSON body; the response's
status, headers and body, JSON as structured data and event streams event by event). A provider adapter
(`providers/anthropic/replay.py`) turns its SDK's requests and responses into interactions and back.

- `cassette.py`  the file format (versioned, diff-friendly JSON), SSE event encoding, safe file names
- `matching.py`  the normalized request key (key order ignored, volatile fields left out)
- `redaction.py` what never reaches disk: auth headers and API keys of known shapes; finding them in files
- `store.py`     `Tape` (one test's cassette, its replay queues and new recordings) and `Recorder` (the run's)

No pytest import, and nothing heavy: the pytest adapter opens one tape per test.
"""

from __future__ import annotations

from .cassette import FORMAT, Cassette, CassetteError, Interaction, cassette_path, safe_name
from .matching import DEFAULT_IGNORED, request_key
from .redaction import find_secrets, redact_body, redact_headers
from .store import MODES, NotRecordedError, Recorder, Tape

__all__ = [
    "DEFAULT_IGNORED",
    "FORMAT",
    "MODES",
    "Cassette",
    "CassetteError",
    "Interaction",
    "NotRecordedError",
    "Recorder",
    "Tape",
    "cassette_path",
    "find_secrets",
    "redact_body",
    "redact_headers",
    "request_key",
    "safe_name",
]
