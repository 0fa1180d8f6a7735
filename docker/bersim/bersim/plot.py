"""results.png: measured BER with 95 % intervals against the theory curve, on a log scale.

Drawn on a bare `Figure` with the Agg canvas: no pyplot, so no GUI backend is ever chosen and
no global figure state leaks between calls.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from bersim.theory import ber_bpsk_awgn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bersim.aggregate import Summary

FIGSIZE_IN = (8.0, 5.5)
DPI = 120
_THEORY_POINTS = 300
_MARGIN_DB = 0.5


def title_for(summary: Summary) -> str:
    """The title: what the plot rests on (tasks, bits) and how many tasks are missing."""
    tasks = f"{summary.tasks} tasks"
    if summary.expected_tasks is not None:
        tasks = f"{summary.tasks} of {summary.expected_tasks} tasks"
    title = f"BPSK over AWGN: {tasks}, {summary.bits:,} bits"
    if summary.missing_tasks:
        title += f" ({len(summary.missing_tasks)} missing)"
    return title


def make_figure(summary: Summary) -> Figure:
    """Build the figure. Points with 0 errors show their 95 % upper bound as a 'v' marker."""
    import numpy as np  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_yscale("log", nonpositive="mask")

    measured = [r for r in summary.rows if r.errors > 0]
    bounded = [r for r in summary.rows if r.errors == 0]
    xs = [r.ebn0_db for r in summary.rows]
    x_low, x_high = min(xs) - _MARGIN_DB, max(xs) + _MARGIN_DB

    grid = np.linspace(x_low, x_high, _THEORY_POINTS)
    theory = np.array([ber_bpsk_awgn(x) for x in grid])
    ax.plot(
        grid,
        theory,
        color="0.35",
        linewidth=1.5,
        label=r"Theory: $\frac{1}{2}\,\mathrm{erfc}\sqrt{E_b/N_0}$",
    )
    if measured:
        ax.errorbar(
            [r.ebn0_db for r in measured],
            [r.ber for r in measured],
            yerr=[
                [r.ber - r.ber_ci_low for r in measured],
                [r.ber_ci_high - r.ber for r in measured],
            ],
            fmt="o",
            color="tab:blue",
            ecolor="tab:blue",
            capsize=4,
            markersize=5,
            label="Simulated, 95 % interval (Clopper-Pearson)",
        )
    if bounded:
        ax.plot(
            [r.ebn0_db for r in bounded],
            [r.ber_ci_high for r in bounded],
            linestyle="none",
            marker="v",
            markersize=8,
            color="tab:red",
            label="0 errors: 95 % upper bound",
        )

    # The y range follows the data, so a theory value of 1e-40 at a high point does not
    # squash the measured points into a corner.
    data_low = min(
        [r.ber_ci_low for r in measured if r.ber_ci_low > 0] + [r.ber_ci_high for r in bounded]
    )
    theory_at_points = [ber_bpsk_awgn(x) for x in xs if ber_bpsk_awgn(x) > 0]
    y_low = max(min([data_low, *theory_at_points]), data_low * 1e-3) / 2
    y_high = min(1.0, 2 * max(r.ber_ci_high for r in summary.rows))
    ax.set_ylim(y_low, y_high)
    ax.set_xlim(x_low, x_high)

    ax.set_xlabel("Eb/N0 (dB)")
    ax.set_ylabel("Bit error rate")
    ax.set_title(title_for(summary))
    ax.grid(visible=True, which="major", alpha=0.6)
    ax.grid(visible=True, which="minor", alpha=0.2)
    ax.legend(loc="lower left")
    return fig


def render_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def figure_png(summary: Summary) -> bytes:
    """The PNG of `make_figure(summary)`."""
    return render_png(make_figure(summary))
