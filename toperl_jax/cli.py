"""What the variants' command lines share: `UsageError`, a user's mistake (a bad flag, run directory or
dataset), and `main`, which runs an entry point and prints such a mistake as one line instead of a traceback.
Everything else (a bug, a crash inside JAX) keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class UsageError(ValueError):
    """A user's mistake, found before or while setting a run up; the message names the flag (`--flag: …`), the
    run directory or the file."""


def main(entry: Callable[[], Any]) -> Any:
    """`entry()`; a `UsageError` exits with status 2 and its message on one line of stderr."""
    try:
        return entry()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
