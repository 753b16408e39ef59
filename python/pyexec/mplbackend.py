"""The matplotlib backend of every sandbox (MPLBACKEND=module://pyexec.mplbackend).

Agg for drawing (no display, files and buffers only), and a show() that
does what Jupyter's inline backend does: it draws every open figure (to
output/figures/figure-N.png, see figures.py) and closes it, so plt.show()
never blocks and never warns that Agg cannot show. matplotlib imports this
module itself, the first time pyplot needs its backend: a script that does
not plot never loads it.
"""

import sys

from matplotlib.backend_bases import FigureManagerBase as FigureManager  # noqa: F401
from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas  # noqa: F401

from . import figures


def show(*args, **kwargs):
    """Draw and close every open figure (block= and other arguments have
    nothing to wait for here)."""
    figures.capture_open(sys.modules["matplotlib.pyplot"])
