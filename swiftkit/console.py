"""Shared rich console, progress bars and the end-of-stage summary table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()


def progress(transient: bool = False) -> Progress:
    """A progress bar with count, elapsed and ETA; use as a context manager."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(title: str, rows: Iterable[tuple[str, Any]], artifact: str | None = None) -> None:
    """Print the short table every stage ends with: what it did, key metrics, where the artifact is."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in rows:
        table.add_row(key, fmt(value))
    if artifact:
        table.add_row("artifact", artifact)
    console.print(table)
