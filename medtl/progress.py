"""Progress bars where a person is watching (a terminal, a notebook), silence in logs and CI (INTERFACE.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def in_notebook() -> bool:
    """Inside a Jupyter kernel (its stderr is no terminal, yet a person reads the cell's output)."""
    return "ipykernel" in sys.modules and type(sys.stderr).__module__.startswith("ipykernel")


def progress_enabled() -> bool:
    flag = os.environ.get("MEDTL_PROGRESS", "auto").lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return (sys.stderr.isatty() or in_notebook()) and not os.environ.get("CI")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``rich`` progress over ``items`` on a terminal, a ``tqdm`` text bar in a notebook (rich's live
    display there needs ipywidgets), a plain loop otherwise."""
    if not progress_enabled():
        yield from items
        return
    if in_notebook():
        from tqdm import tqdm

        yield from tqdm(items, desc=description, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=_console()) as bar:
        yield from bar.track(items, total=total, description=description)


def _console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)
