"""bersim.plot: the figure's content (title, axes, curves, 0-error bounds) and a real PNG."""

from __future__ import annotations

import io
import json
import struct

import matplotlib.image
import numpy as np
import pytest

from bersim.aggregate import summarise
from bersim.plot import DPI, FIGSIZE_IN, figure_png, make_figure, render_png
from bersim.result import TASK_SCHEMA, parse_task_result
from bersim.theory import ber_bpsk_awgn


def summary_of(counts: list[tuple[int, float, int, int]], expected_tasks: int | None = None):
    results = []
    for index, ebn0_db, bits, errors in counts:
        doc = {
            "schema": TASK_SCHEMA,
            "task_index": index,
            "ebn0_db": ebn0_db,
            "bits": bits,
            "errors": errors,
            "seed": index,
            "target_errors": 0,
            "max_bits": bits,
            "elapsed_s": 1.0,
            "provenance": {},
        }
        results.append((str(index), parse_task_result(json.dumps(doc).encode(), where="t")))
    return summarise(results, expected_tasks=expected_tasks)


STUDY = [(0, 0.0, 40_000, 3_150), (1, 4.0, 400_000, 5_000), (2, 8.0, 4_000_000, 760)]
STUDY_WITH_ZERO = [*STUDY, (3, 12.0, 2_000_000, 0)]


def test_title_names_tasks_bits_and_missing() -> None:
    fig = make_figure(summary_of(STUDY_WITH_ZERO, expected_tasks=6))
    title = fig.axes[0].get_title()
    assert title == "BPSK over AWGN: 4 of 6 tasks, 6,440,000 bits (2 missing)"


def test_title_without_expected_tasks_has_no_missing_part() -> None:
    title = make_figure(summary_of(STUDY)).axes[0].get_title()
    assert title == "BPSK over AWGN: 3 tasks, 4,440,000 bits"


def test_axes_scale_labels_legend_and_grid() -> None:
    ax = make_figure(summary_of(STUDY_WITH_ZERO)).axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Eb/N0 (dB)"
    assert ax.get_ylabel() == "Bit error rate"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("Theory") for label in legend)
    assert any("95 % interval" in label for label in legend)
    assert "0 errors: 95 % upper bound" in legend
    assert any(line.get_visible() for line in ax.get_xgridlines())


def test_theory_is_a_smooth_curve_over_the_plotted_range() -> None:
    ax = make_figure(summary_of(STUDY)).axes[0]
    theory = next(line for line in ax.get_lines() if line.get_label().startswith("Theory"))
    xs, ys = (np.asarray(v, dtype=float) for v in theory.get_data())
    assert len(xs) >= 100
    assert (xs[0], xs[-1]) == pytest.approx(ax.get_xlim())
    assert xs[0] < 0.0
    assert xs[-1] > 8.0
    assert ys == pytest.approx([ber_bpsk_awgn(x) for x in xs], rel=1e-12)


def test_measured_points_carry_their_intervals_and_zero_errors_a_bound() -> None:
    summary = summary_of(STUDY_WITH_ZERO)
    ax = make_figure(summary).axes[0]
    data_line, _caps, (bars,) = ax.containers[0].lines
    assert list(data_line.get_ydata()) == [r.ber for r in summary.rows[:3]]
    ends = np.array([(seg[0][1], seg[1][1]) for seg in bars.get_segments()])
    expected = np.array([(r.ber_ci_low, r.ber_ci_high) for r in summary.rows[:3]])
    np.testing.assert_allclose(ends, expected, rtol=1e-9)
    bound = next(line for line in ax.get_lines() if line.get_marker() == "v")
    assert list(bound.get_xdata()) == [12.0]
    assert list(bound.get_ydata()) == [summary.rows[3].ber_ci_high]
    low, high = ax.get_ylim()
    assert low < min(r.ber_ci_low for r in summary.rows[:3])
    assert high <= 1.0
    assert low < summary.rows[3].ber_ci_high


def test_a_study_with_only_zero_error_points_still_plots() -> None:
    fig = make_figure(summary_of([(0, 20.0, 1_000_000, 0)]))
    low, high = fig.axes[0].get_ylim()
    assert 0 < low < high


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_is_a_real_png_of_the_declared_size() -> None:
    data = figure_png(summary_of(STUDY_WITH_ZERO, expected_tasks=5))
    assert png_size(data) == (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))
    assert 10_000 < len(data) < 1_000_000
    assert data.endswith(b"IEND\xaeB`\x82")


def pixels(data: bytes) -> np.ndarray:
    """The PNG's decoded pixels (rows x columns x RGBA)."""
    return np.asarray(matplotlib.image.imread(io.BytesIO(data), format="png"))


def test_render_is_deterministic_for_the_same_figure_content() -> None:
    """Two renders of the same summary are the same pixels; other data are other pixels."""
    first = pixels(figure_png(summary_of(STUDY)))
    again = pixels(render_png(make_figure(summary_of(STUDY))))
    np.testing.assert_array_equal(again, first)

    # One count more at 8 dB moves only that point and its interval: the comparison sees data.
    moved = pixels(figure_png(summary_of([*STUDY[:2], (2, 8.0, 4_000_000, 900)])))
    assert moved.shape == first.shape
    assert (moved != first).any()
