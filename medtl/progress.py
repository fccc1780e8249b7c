"""Progress bars on a terminal, silence in logs and CI (INTERFACE.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    flag = os.environ.get("MEDTL_PROGRESS", "auto").lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return sys.stderr.isatty() and not os.environ.get("CI")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``rich`` progress over ``items`` when a person is watching, a plain loop otherwise."""
    if not progress_enabled():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=_console()) as bar:
        yield from bar.track(items, total=total, description=description)


def _console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)
