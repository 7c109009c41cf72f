"""pytest adapter for pytest-costguard (being built)."""
