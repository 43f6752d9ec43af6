"""The book's one plotting helper: a consistent style for every chapter's figures.

Colour maps are sequential and readable in greyscale (``Greys`` for counts,
``cividis`` for signed values), axes are labelled, and figures are small enough
for a laptop screen and a phone.
"""

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

#: Counts (how many kernel taps reach a pixel): darker is more visited, as in the lecture.
COUNT_CMAP = "Greys"
#: Signed values (signals, kernels, outputs): perceptually uniform, greyscale-safe.
VALUE_CMAP = "cividis"


def use_course_style() -> None:
    """Set the rcParams every chapter shares (call once, at the top of a chapter)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.2),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 10,
            "image.cmap": VALUE_CMAP,
            "animation.html": "jshtml",
            "animation.embed_limit": 20.0,
        }
    )


def show_matrix(ax, matrix, *, title: str, xlabel: str, ylabel: str, annotate: bool = True):
    """Draw a small matrix as an image, with its entries written in the cells."""
    values = np.asarray(matrix, dtype=float)
    limit = max(abs(values).max(), 1e-12)
    image = ax.imshow(values, cmap=VALUE_CMAP, vmin=-limit, vmax=limit)
    if annotate:
        for (row, col), value in np.ndenumerate(values):
            shade = "white" if abs(value) > 0.55 * limit and value < 0 else "black"
            ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=8, color=shade)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    return image


def show_counts(ax, counts, *, title: str, xlabel: str = "output column", ylabel: str = "output row"):
    """Draw a coverage map: how many kernel taps reach each output pixel (darker is more)."""
    values = np.asarray(counts, dtype=float)
    image = ax.imshow(values, cmap=COUNT_CMAP, vmin=0, vmax=max(values.max(), 1))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="taps")
    return image
