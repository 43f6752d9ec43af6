"""The book's one plotting helper: a consistent style for every chapter's figures.

Colour maps are sequential and readable in greyscale (``Greys`` for counts,
``cividis`` for signed values), axes are labelled, and figures are small enough
for a laptop screen and a phone.
"""

import re

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.patches import Rectangle

#: Counts (how many kernel taps reach a pixel): darker is more visited, as in the lecture.
COUNT_CMAP = "Greys"
#: Signed values (signals, kernels, outputs): perceptually uniform, greyscale-safe.
VALUE_CMAP = "cividis"


def show_figures_inline() -> None:
    """Make ``plt.show()`` draw into the cell's output, whatever ``MPLBACKEND`` says.

    A kernel started with ``MPLBACKEND=Agg`` (common on headless servers) would otherwise
    draw nothing and raise nothing, and the book would build without its figures. Outside
    IPython (a plain script) this does nothing.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")


def use_course_style() -> None:
    """Draw figures into the cell's output and set the rcParams every chapter shares.

    Call once, at the top of a chapter, before any figure exists.
    """
    show_figures_inline()
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


def show_counts(
    ax,
    counts,
    *,
    title: str,
    xlabel: str = "output column",
    ylabel: str = "output row",
    vmax: float | None = None,
    label: str = "taps",
):
    """Draw a coverage map: how many kernel taps reach each output pixel (darker is more).

    Maps that are compared must share one scale: pass them all the same ``vmax``. ``label``
    names what is counted (taps, windows), on the colour bar.
    """
    values = np.asarray(counts, dtype=float)
    top = max(values.max(), 1) if vmax is None else vmax
    image = ax.imshow(values, cmap=COUNT_CMAP, vmin=0, vmax=top)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    return image


def show_sequence(ax, values, *, title: str, xlabel: str, ylabel: str = "value", start: int = 0):
    """Draw a short 1-d signal or kernel as a stem plot, one integer tick per entry.

    ``start`` is the index of the first entry: 1 for the lecture's 1-based math, 0 for code.
    """
    values = np.asarray(values, dtype=float)
    positions = np.arange(start, start + len(values))
    ax.stem(positions, values, linefmt="k-", markerfmt="ko", basefmt="k:")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(positions)
    ax.margins(x=0.1, y=0.15)


def _draw_cells(ax, left: float, row: float, values, *, highlight=(), label: str = ""):
    """Draw one row of square cells with their values written in, some highlighted."""
    for offset, value in enumerate(values):
        shaded = offset in highlight
        ax.add_patch(
            Rectangle(
                (left + offset, row),
                1,
                1,
                facecolor="0.8" if shaded else "white",
                edgecolor="black",
                linewidth=2.0 if shaded else 0.8,
            )
        )
        ax.text(left + offset + 0.5, row + 0.5, f"{value + 0.0:g}", ha="center", va="center")
    if label:
        ax.text(-0.3, row + 0.5, label, ha="right", va="center")


def animate_kernel_sum(signal, kernel, *, stride: int = 1, interval_ms: int = 900):
    """Animate a 1-d transposed convolution as a weighted sum of translated kernels.

    Input x of length W, kernel κ of length w, stride s: step i (0-based) places x[i]·κ at
    offset i·s of the output and adds it in, so the output has length s(W − 1) + w.
    Returns a ``FuncAnimation`` of W + 2 frames (empty output, one frame per step, result);
    show it with :func:`animation_html`.
    """
    signal = np.asarray(signal, dtype=float)
    kernel = np.asarray(kernel, dtype=float)
    input_length, kernel_length = len(signal), len(kernel)
    output_length = stride * (input_length - 1) + kernel_length
    width = max(output_length, stride * (input_length - 1) + 1)

    # Half an inch per cell, plus a fixed margin for the row labels and the title.
    cell_inches, label_inches, title_inches = 0.5, 1.1, 0.45
    axes_width, axes_height = cell_inches * (width + 0.4), cell_inches * 5.5
    figure = plt.figure(
        figsize=(label_inches + axes_width + 0.1, axes_height + title_inches), dpi=72
    )
    figure_width, figure_height = figure.get_size_inches()
    ax = figure.add_axes(
        (
            label_inches / figure_width,
            0,
            axes_width / figure_width,
            axes_height / figure_height,
        )
    )

    def draw(frame: int) -> None:
        ax.clear()
        ax.set_xlim(-0.2, width + 0.2)
        ax.set_ylim(-0.3, 5.2)
        ax.set_aspect("equal")
        ax.axis("off")
        steps_done = min(frame, input_length)
        running_sum = np.zeros(output_length)
        for step in range(steps_done):
            running_sum[step * stride : step * stride + kernel_length] += signal[step] * kernel
        current = frame - 1 if 1 <= frame <= input_length else None
        # Input cells sit above the output offset i·s where their kernel copy starts.
        for step, value in enumerate(signal):
            _draw_cells(ax, step * stride, 4, [value], highlight={0} if step == current else ())
        ax.text(-0.3, 4.5, "input x", ha="right", va="center")
        if current is None:
            ax.text(-0.3, 2.5, "x[i]·κ", ha="right", va="center")
            touched = ()
        else:
            start = current * stride
            _draw_cells(ax, start, 2, signal[current] * kernel, label="x[i]·κ")
            touched = range(start, start + kernel_length)
        _draw_cells(ax, 0, 0, running_sum, highlight=set(touched), label="output y")
        if frame == 0:
            ax.set_title("start: the output is all zeros")
        elif current is not None:
            ax.set_title(
                f"step i = {current}: y[{current * stride}:{current * stride + kernel_length}]"
                f" += x[{current}]·κ = {signal[current]:g}·κ"
            )
        else:
            ax.set_title(f"done: output length s(W − 1) + w = {output_length}")

    return FuncAnimation(figure, draw, frames=input_length + 2, interval=interval_ms, repeat=False)


def _draw_grid(ax, values, *, highlight=(), cropped=None):
    """Draw a matrix as square cells with their values, row 0 on top; some highlighted.

    ``cropped`` is a margin: cells within it of the border are drawn faded (padding's crop).
    """
    rows, cols = values.shape
    for (row, col), value in np.ndenumerate(values):
        shaded = (row, col) in highlight
        outside = cropped is not None and not (
            cropped <= row < rows - cropped and cropped <= col < cols - cropped
        )
        ax.add_patch(
            Rectangle(
                (col, rows - 1 - row),
                1,
                1,
                facecolor="0.8" if shaded else ("0.93" if outside else "white"),
                edgecolor="0.6" if outside else "black",
                linewidth=2.0 if shaded else 0.8,
            )
        )
        shade = "0.55" if outside else "black"
        ax.text(
            col + 0.5, rows - 0.5 - row, f"{value + 0.0:g}", ha="center", va="center", color=shade
        )
    ax.set_xlim(-0.2, cols + 0.2)
    ax.set_ylim(-0.2, rows + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")


def animate_kernel_sum_2d(signal, kernel, *, stride: int = 1, padding: int = 0, interval_ms=900):
    """Animate a 2-d transposed convolution: each input pixel stamps its scaled kernel.

    Input x (H × W), kernel κ (h × w), stride s: step (i, j) adds x[i, j]·κ with its top-left
    corner at (s·i, s·j) of the full output, (s(H − 1) + h) × (s(W − 1) + w); padding p then
    crops p rows and columns at every edge (the faded cells outside the dashed frame).
    Returns a ``FuncAnimation`` of H·W + 2 frames; show it with :func:`animation_html`.
    """
    signal, kernel = np.asarray(signal, dtype=float), np.asarray(kernel, dtype=float)
    (height, width), (kernel_height, kernel_width) = signal.shape, kernel.shape
    full = (stride * (height - 1) + kernel_height, stride * (width - 1) + kernel_width)
    steps = [(i, j) for i in range(height) for j in range(width)]
    figure, (left, right) = plt.subplots(
        1,
        2,
        figsize=(0.5 * (width + full[1]) + 1.2, 0.5 * max(height, full[0]) + 0.9),
        dpi=72,
        width_ratios=(width + 0.4, full[1] + 0.4),
    )

    def draw(frame: int) -> None:
        left.clear()
        right.clear()
        total = np.zeros(full)
        for i, j in steps[: min(frame, len(steps))]:
            top, corner = stride * i, stride * j
            total[top : top + kernel_height, corner : corner + kernel_width] += (
                signal[i, j] * kernel
            )
        current = steps[frame - 1] if 1 <= frame <= len(steps) else None
        stamp = set()
        if current is not None:
            top, corner = stride * current[0], stride * current[1]
            stamp = {
                (top + a, corner + b) for a in range(kernel_height) for b in range(kernel_width)
            }
        _draw_grid(left, signal, highlight={current} if current else ())
        left.set_title("input x")
        _draw_grid(right, total, highlight=stamp, cropped=padding if padding else None)
        if padding:
            kept = (full[1] - 2 * padding, full[0] - 2 * padding)
            right.add_patch(
                Rectangle((padding, padding), *kept, fill=False, linestyle="--", linewidth=2)
            )
        if current is not None:
            i, j = current
            right.set_title(f"step ({i}, {j}): += x[{i}, {j}]·κ at ({stride * i}, {stride * j})")
        elif frame == 0:
            right.set_title("start: the full output is all zeros")
        else:
            size = f"{full[0] - 2 * padding} × {full[1] - 2 * padding}"
            right.set_title(f"done: padding {padding} crops to the framed {size}")

    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.85, wspace=0.15)
    return FuncAnimation(figure, draw, frames=len(steps) + 2, interval=interval_ms, repeat=False)


def animation_html(animation, *, alt: str):
    """Render an animation as self-contained HTML/JS (works on a static page), with alt text.

    matplotlib's player shows each frame in an ``<img>`` without ``alt``; this adds one. It
    also drops the player's ``<link>`` to Font Awesome on a CDN (the book works offline; the
    theme serves its own Font Awesome, which draws the buttons' icons), and closes the
    animation's figure so the notebook does not also show its last frame.
    """
    from html import escape

    from IPython.display import HTML

    page = animation.to_jshtml()
    plt.close(animation._fig)
    page = re.sub(r"<link[^>]*font-awesome[^>]*>", "", page)
    return HTML(page.replace("<img id=", f'<img alt="{escape(alt)}" id=', 1))


def show_placed_kernels(
    ax,
    rows,
    total,
    *,
    row_labels,
    title: str,
    xlabel: str = "output position (0-based)",
):
    """Draw a transposed convolution as a weighted sum of translated kernels.

    ``rows[i]`` holds the copy ``x_i · κ`` at the output positions it reaches (NaN
    elsewhere, drawn blank); ``total`` is their sum, drawn under a rule as the last row.
    """
    placed = np.asarray(rows, dtype=float).reshape(-1, np.shape(total)[-1])
    values = np.vstack([placed, np.asarray(total, dtype=float)[None, :]])
    limit = max(np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0, 1e-12)
    cmap = mpl.colormaps[VALUE_CMAP].copy()
    cmap.set_bad("white")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit)
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            shade = "white" if value < -0.55 * limit else "black"
            # "+ 0.0" writes 0·(-1) as 0, not -0.
            label = f"{value + 0.0:g}"
            ax.text(col, row, label, ha="center", va="center", fontsize=8, color=shade)
    # The rule separates the translated copies from their sum.
    ax.axhline(len(placed) - 0.5, color="black", linewidth=2)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels([*row_labels, "sum"])
    ax.set_xticks(range(values.shape[1]))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return image


def show_image(ax, values, *, title: str, xlabel: str = "column", ylabel: str = "row"):
    """Draw a 2-d map (a layer's output) in greys, with its own value range and a colorbar."""
    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, cmap=COUNT_CMAP, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="value")
    return image
