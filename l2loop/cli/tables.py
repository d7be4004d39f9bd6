"""Tables on the terminal: the columns as wide as their widest cell."""

from __future__ import annotations

from collections.abc import Sequence

import click


def echo_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Prints ``header`` and ``rows``; nothing when there are no rows."""
    if not rows:
        return
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
