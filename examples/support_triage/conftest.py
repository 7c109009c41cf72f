"""Make `triage` importable however pytest is started.

`pytest examples/support_triage` (from the repo root) or `pytest` (here) use this folder's pytest.ini, whose
`pythonpath = .` does it. `pytest examples` from the repo root uses the root's pyproject.toml instead; then
this file, loaded in pytest's default "prepend" import mode, puts its folder on sys.path.
"""
