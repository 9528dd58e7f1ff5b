"""Figures rendered to PNG bytes with matplotlib's object API: no pyplot, so no global backend is switched.

Import this module only where a figure is drawn (it imports matplotlib).
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


def subplots(*grid: int, **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, on a figure that belongs to no GUI backend."""
    figsize = kwargs.pop("figsize", None)
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid, **kwargs)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (110 dpi, tight box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def integer_ticks(axis, *, x: bool = True, y: bool = False) -> None:
    """Only integer tick positions on the chosen axes of ``axis`` (layers, depths, counts)."""
    from matplotlib.ticker import MaxNLocator

    if x:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
