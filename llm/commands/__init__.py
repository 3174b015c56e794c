"""Subcommands of `python -m llm`, one module each (see llm/__main__.py)."""


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2.

    It lives here, not in `llm/__main__.py`, because under `python -m llm` that module
    runs as `__main__` and a class imported from `llm.__main__` would be a different one.
    """
