"""The figures' shared canvas: size, resolution, palette and a figure bound to its own Agg canvas.

Why apart from figures.py: the recall section draws its figure in scaling.report.recall, and
figures.py lists that figure among the report's; both take the canvas from here, so neither
imports the other's drawing code in a circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
FIGSIZE = (8.0, 5.0)
#: matplotlib's tab10, spelled out so colours can be chosen without importing matplotlib
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def new_figure(width: float = FIGSIZE[0], height: float = FIGSIZE[1]) -> "Figure":
    """A figure bound to its own Agg canvas, so nothing passes through pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig
