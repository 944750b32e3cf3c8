"""The matplotlib plots (edged.eval.plots): real PNG files, checked by decoding them and by the figures' axes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from edged.errors import EdgedError
from edged.eval.plots import (
    LEGEND_MAX,
    MISSING,
    Series,
    colour,
    curves_figure,
    plot_curves,
    plot_roc,
    plot_scatter,
    scatter_figure,
)
from tests.conftest import ROOT

pytestmark = pytest.mark.pure

X = np.linspace(0.0, 1.2, 121)
FAR = Series("FAR", X, np.exp(-8 * X))
FRR = Series("FRR", X, 1 - np.exp(-5 * (1.2 - X)))


def read_rgb(path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} is not a readable image"
    return img[:, :, ::-1]


def pixels_of(rgb: np.ndarray, c: tuple[int, int, int]) -> int:
    return int(np.all(rgb == np.array(c, np.uint8), axis=2).sum())


def legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def test_curves_png_is_written_whole_with_mode_0644(tmp_path):
    out = tmp_path / "far_frr.png"
    plot_curves(out, [FAR, FRR], title="t", xlabel="threshold", ylabel="error rate", y_range=(0.0, 1.0),
                vlines=[(0.18, "current"), (0.4, "suggested")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = read_rgb(out)
    assert rgb.shape == (600, 900, 3)
    assert out.stat().st_size > 10_000
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far_frr.png"]  # no temp file left
    assert pixels_of(rgb, colour(0)) > 500 and pixels_of(rgb, colour(1)) > 500  # both lines, 2 px wide


def test_second_series_changes_the_picture(tmp_path):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plot_curves(one, [FAR], y_range=(0.0, 1.0))
    plot_curves(two, [FAR, FRR], y_range=(0.0, 1.0))
    a, b = read_rgb(one), read_rgb(two)
    assert a.shape == b.shape
    assert np.mean(np.any(a != b, axis=2)) > 0.005  # a whole curve, not a few pixels
    assert pixels_of(a, colour(1)) == 0 < pixels_of(b, colour(1))
    # the same plot twice is the same picture
    plot_curves(tmp_path / "again.png", [FAR], y_range=(0.0, 1.0))
    assert np.array_equal(read_rgb(tmp_path / "again.png"), a)


def test_curve_lands_where_it_belongs(tmp_path):
    """A flat line at y = 0.5 is drawn half-way up the axes, across their whole width."""
    fig = curves_figure([Series("flat", X, np.full_like(X, 0.5))], y_range=(0.0, 1.0))
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3]
    ax = fig.axes[0]
    (x0, y0), (x1, y1) = ax.transAxes.transform([(0, 0), (1, 1)])
    height = rgb.shape[0]
    ys, xs = np.nonzero(np.all(rgb == np.array(colour(0), np.uint8), axis=2))
    inside = (xs > x0 + 5) & (xs < x1 - 5) & (ys > height - y1 + 5) & (ys < height - y0 - 5)
    legend_box = ax.get_legend().get_window_extent()
    outside_legend = ~((xs >= legend_box.x0) & (xs <= legend_box.x1))
    rows = ys[inside & outside_legend]
    assert abs(np.median(rows) - (height - (y0 + y1) / 2)) <= 2
    assert rows.max() - rows.min() <= 3
    assert xs[inside].max() - xs[inside].min() > 0.9 * (x1 - x0 - 10)


def test_log_x_leaves_out_non_positive_values():
    x = np.array([-1.0, 0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    fig = curves_figure([Series("DIR", x, np.linspace(0.1, 1.0, len(x)))], log_x=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    [line] = ax.get_lines()
    assert line.get_xdata().tolist() == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert line.get_ydata()[0] == pytest.approx(0.1 + 0.9 * 2 / 6)  # paired with its own y, not shifted
    lo, hi = ax.get_xlim()
    assert lo == pytest.approx(1e-4) and hi == pytest.approx(1.0)
    with pytest.raises(EdgedError, match=r"series 'zero': no x value > 0 to draw on a logarithmic x axis"):
        curves_figure([Series("zero", np.array([0.0, -2.0]), np.array([0.5, 0.6]))], log_x=True)
    linear = curves_figure([Series("DIR", x, np.linspace(0.1, 1.0, len(x)))]).axes[0]
    assert linear.get_xscale() == "linear" and len(linear.get_lines()[0].get_xdata()) == len(x)


def test_markers_outside_the_curves_do_not_widen_the_axis():
    plain = curves_figure([FAR]).axes[0].get_xlim()
    ax = curves_figure([FAR], vlines=[(0.3, "current"), (7.0, "far away")]).axes[0]
    assert ax.get_xlim() == pytest.approx(plain)
    assert [t.get_text() for t in ax.texts] == [" current"]


def test_curves_reject_mismatched_series():
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        curves_figure([Series("bad", np.arange(3.0), np.arange(2.0))])


def test_scatter_legend_draws_non_ascii_names_literally(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(12, 2))
    labels = np.repeat(np.arange(4), 3)
    names = ["José Müller", "Дмитрий Ёлкин", "_hidden", "Ke$ha $x$"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Glyph ... missing from font"
        fig = scatter_figure(points, labels, names, title="gallery", xlabel="PCA 1", ylabel="PCA 2")
        assert legend_texts(fig) == names  # '_hidden' kept, '$' not read as mathtext
        unicode, ascii_ = tmp_path / "unicode.png", tmp_path / "ascii.png"
        plot_scatter(unicode, points, labels, names, title="gallery")
    plot_scatter(ascii_, points, labels, ["Jos? M?ller", "??????? ?????", "_hidden", "Ke$ha $x$"], title="gallery")
    a, b = read_rgb(unicode), read_rgb(ascii_)
    assert a.shape == (650, 900, 3)
    assert np.any(a != b)  # the names are drawn as themselves, not as '?'
    for i in range(4):
        assert pixels_of(a, colour(i)) > 50  # every person's dots in their own colour


def test_scatter_legend_is_capped():
    names = [f"person {i}" for i in range(LEGEND_MAX + 6)]
    labels = np.arange(len(names))
    fig = scatter_figure(np.random.default_rng(1).normal(size=(len(names), 2)), labels, names)
    texts = legend_texts(fig)
    assert texts == [*names[:LEGEND_MAX], "+6 more"]


def test_scatter_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="3 points but 2 labels"):
        scatter_figure(np.zeros((3, 2)), np.array([0, 1]), ["a", "b"])


@pytest.mark.parametrize("kind", ["curves", "roc", "scatter"])
def test_unwritable_file_is_a_one_line_error_naming_it(tmp_path, kind):
    target = tmp_path / "missing" / "plot.png"
    draw = {
        "curves": lambda p: plot_curves(p, [FAR]),
        "roc": lambda p: plot_roc(p, [(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.9, 1.0]))], "t", "mean"),
        "scatter": lambda p: plot_scatter(p, np.zeros((2, 2)), np.array([0, 1]), ["a", "b"]),
    }[kind]
    with pytest.raises(EdgedError) as err:
        draw(target)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert "No such file or directory" in str(err.value)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(EdgedError, match=r"plot\.jpg: plots are written as PNG; use a \.png file name"):
        draw(tmp_path / "plot.jpg")
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_plots_say_how_to_install_it(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    calls = [lambda p: plot_curves(p, [FAR]),
             lambda p: plot_roc(p, [(np.array([0.0, 1.0]), np.array([0.0, 1.0]))], "t", "mean"),
             lambda p: plot_scatter(p, np.zeros((1, 2)), np.array([0]), ["a"])]
    for draw in calls:
        with pytest.raises(EdgedError) as err:
            draw(tmp_path / "plot.png")
        assert str(err.value) == MISSING == "plots need matplotlib: pip install 'edged[plots]'"
        assert err.value.__cause__ is None and err.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


def test_cli_import_does_not_load_matplotlib():
    code = ("import sys; from edged.cli import build_parser; build_parser(); import edged.eval.plots; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
