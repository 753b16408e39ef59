"""Figures a script shows or leaves open come back as PNG files.

As Jupyter and E2B show them: every matplotlib figure the script shows
(`plt.show()`) or leaves open when it ends is drawn to
output/figures/figure-N.png (N = 1, 2, ... in the order they are shown;
those still open at the end follow in figure-number order), and closed.
They are then ordinary output files (files.collect), under the same caps.

Nothing here imports matplotlib: script.py calls capture_open only when
the script (or the zygote's preload) imported pyplot, and the backend
(pyexec.mplbackend, which MPLBACKEND names) calls it from plt.show().
"""

import os

from . import files

FIGURES_DIR = files.OUTPUT_DIR + "/figures"


def _next_path():
    """The first output/figures/figure-N.png that does not exist yet: a
    file of the script's own there is never replaced."""
    os.makedirs(FIGURES_DIR, 0o755, exist_ok=True)
    n = 1
    while os.path.lexists("%s/figure-%d.png" % (FIGURES_DIR, n)):
        n += 1
    return "%s/figure-%d.png" % (FIGURES_DIR, n)


def capture_open(pyplot):
    """Draw every open figure of pyplot to its PNG file, in figure-number
    order, and close it; return how many were drawn."""
    nums = pyplot.get_fignums()
    for num in nums:
        figure = pyplot.figure(num)
        path = _next_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out:
            figure.savefig(out, format="png")
        pyplot.close(figure)
    return len(nums)


def is_plot(value):
    """Whether value is what a plotting call returns (an Axes, a Figure, a
    list or array of artists): a cell ending in df.plot() shows the figure,
    not the object."""
    def artist(v):
        return (type(v).__module__ or "").startswith("matplotlib.")

    if artist(value):
        return True
    if isinstance(value, (list, tuple)):
        return bool(value) and all(artist(v) for v in value)
    if type(value).__name__ == "ndarray" and getattr(value, "dtype", None) == object and value.size:
        return all(artist(v) for v in value.flat)
    return False
