"""pytest-costguard: keep what code spends on LLM APIs under a hard budget."""
