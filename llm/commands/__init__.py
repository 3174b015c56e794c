"""Subcommands of `python -m llm`, one module each (see llm/__main__.py)."""
