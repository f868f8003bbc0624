"""The rich pieces the commands share: the progress bar shown while cases run.

Owns how ``netdam demo``, ``bench``, ``sim`` and friends show progress, so they look
alike: a description, a bar, done/total and the time elapsed, removed when done.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console | None = None) -> Progress:
    """A transient bar; use as a context manager, ``add_task(description, total=n)``."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)
