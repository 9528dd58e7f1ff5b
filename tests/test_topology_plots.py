"""Topology figures (and the angular baseline's): valid PNGs, fast at 20,000 bars, and the words a reader needs."""

import io
import time

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from lmms_topo_plugin.registry import get_method
from lmms_topo_plugin.scorers.base import LayerScores
from lmms_topo_plugin.topology import plots
from lmms_topo_plugin.topology.plots import (
    barcode_figure,
    consistency_figure,
    consistency_png,
    diagnostics_figure,
    diagnostics_png,
    epi_figure,
    sorted_bars,
    write_topology_plots,
)

L = 12  # decoder layers; depths 0..L


def random_bars(count: int, seed: int = 0) -> list[list[int]]:
    generator = np.random.default_rng(seed)
    birth = generator.integers(0, L, count)
    death = np.minimum(birth + generator.integers(1, 5, count), L)
    last = np.where(generator.random(count) < 0.5, death, death - 1)
    return np.stack([birth, death, last], axis=1).tolist()


def diagnostics(warnings=(), share_h0=None):
    dim = {"raw_bars": 9, "kept_bars": 5, "lifetime_counts": [3, 1, 1] + [0] * (L - 3), "constant": False}
    return {"dims": {"h0": {**dim, "score_share": share_h0, "constant": True}, "h1": {**dim, "score_share": 0.4}},
            "depths": {"distinct_points": [1] + [40] * L, "rank": [0] + [16] * L,
                       "degenerate": [True] + [False] * L},
            "warnings": list(warnings)}


def make_result(bars_h0=((0, L, L),), bars_h1=((2, 5, 4), (3, 4, 4)), with_diagnostics=False, **params):
    """A hand-made analyze_topology result of ``L`` layers (no dionysus needed)."""
    generator = np.random.default_rng(1)
    result = {
        "params": {"k": 15, "alpha": 1.0, "sigma": 0.5, "engine": "fast", **params},
        "importance": generator.random(L).tolist(),
        "layer_consistency": generator.random(L).tolist(),
        "layer_survival": generator.random(L).tolist(),
        "depth_consistency": generator.random(L + 1).tolist(),
        "topological_activity": generator.random(L + 1).tolist(),
        "bars_h0": [list(b) for b in bars_h0],
        "bars_h1": [list(b) for b in bars_h1],
        "epi_h0": generator.random((L + 1, L + 1)).tolist(),
        "epi_h1": np.zeros((L + 1, L + 1)).tolist() if not bars_h1 else generator.random((L + 1, L + 1)).tolist(),
    }
    if with_diagnostics:
        result["diagnostics"] = diagnostics(["depth 0 is degenerate: all 40 points coincide"])
    return result


def texts(figure) -> str:
    """Every piece of text in the figure (titles, labels, legends, annotations), one per line."""
    return "\n".join(t.get_text() for t in figure.findobj(Text) if t.get_text())


def check_png(png: bytes) -> None:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.01  # not blank


def integer_ticks(axis, which="x") -> bool:
    ticks = axis.get_xticks() if which == "x" else axis.get_yticks()
    return len(ticks) > 1 and all(float(t).is_integer() for t in ticks)


def test_every_figure_is_a_readable_png(tmp_path):
    paths = write_topology_plots(make_result(with_diagnostics=True), tmp_path, removed=[3, 4])
    assert [p.name for p in paths] == ["topology_barcode.png", "topology_epi.png", "topology_consistency.png",
                                       "topology_diagnostics.png"]
    for path in paths:
        check_png(path.read_bytes())
    assert consistency_png(make_result(), None).startswith(b"\x89PNG")  # no removed layers


def test_diagnostics_are_written_only_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "figure_png", lambda figure: b"\x89PNG stub")  # the file list, not the pixels
    old = write_topology_plots(make_result(), tmp_path / "old", removed=[1])
    assert [p.name for p in old] == ["topology_barcode.png", "topology_epi.png", "topology_consistency.png"]
    new = write_topology_plots(make_result(with_diagnostics=True), tmp_path / "new")
    assert [p.name for p in new] == [p.name for p in old] + ["topology_diagnostics.png"]
    assert all(p.exists() for p in new) and not (tmp_path / "old" / "topology_diagnostics.png").exists()


@pytest.mark.parametrize("count", [0, 1, 20_000])
def test_barcode_at_0_1_and_20000_bars(count):
    result = make_result(bars_h1=random_bars(count), num_points=20_000)
    start = time.perf_counter()
    figure = barcode_figure(result)
    png = plots.figure_png(figure)
    assert time.perf_counter() - start < 10
    check_png(png)
    _, h1 = figure.axes
    words = {0: "H1 (loops): 0 bars", 1: "H1 (loops): 1 bar", 20_000: "H1 (loops): 20000 bars"}[count]
    assert h1.get_title().startswith(words)
    assert figure.axes[0].get_title() == "H0 (connected components): 1 bar"  # singular, not "1 bars"
    if count:
        assert "bar count" in h1.get_ylabel() and h1.get_ylim() == (0, count)
        assert integer_ticks(h1, "y")
    else:
        assert "no H1 bars" in texts(figure)
    if count == 20_000:  # aggregated: one block per distinct (birth, death, last), not 20,000 lines
        assert len(h1.patches) == len({tuple(b) for b in result["bars_h1"]}) <= 2 * (L + 1) ** 2
        assert "blocks of identical bars" in h1.get_title()


def test_barcode_explains_markers_and_what_the_zigzag_is_over():
    figure = barcode_figure(make_result(num_points=40))
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert any("alive at its death depth" in t for t in legend)
    assert any("dead on entering its death depth" in t for t in legend)
    assert any("still alive at the last depth 12" in t for t in legend)
    title = figure._suptitle.get_text()
    assert r"$h_0 \ldots h_{12}$" in title and "40 samples" in title and "k = 15" in title
    for axis in figure.axes:
        assert "depth" in axis.get_xlabel() and integer_ticks(axis)
    # params are optional (the scorer's report passes the result without them)
    result = make_result()
    del result["params"]
    assert "k =" not in barcode_figure(result)._suptitle.get_text()


def test_bars_are_sorted_by_birth_then_lifetime():
    rows = sorted_bars([[3, 4, 4], [0, 5, 4], [0, 2, 2], [0, 2, 1]])
    assert rows.tolist() == [[0, 2, 1], [0, 2, 2], [0, 5, 4], [3, 4, 4]]
    assert sorted_bars([]).shape == (0, 3)


def test_epi_is_spelled_out_with_labelled_colour_bars():
    figure = epi_figure(make_result())
    title = figure._suptitle.get_text()
    assert "effective persistence image" in title and "Gaussian" in title and "weighted by its lifetime" in title
    images = [axis for axis in figure.axes if axis.images]
    colour_bars = [axis for axis in figure.axes if not axis.images]
    assert len(images) == 2 and [a.get_ylabel() for a in colour_bars] == ["lifetime-weighted bar density"] * 2
    for axis in images:
        assert integer_ticks(axis, "x") and integer_ticks(axis, "y")
    assert "no bars" in texts(epi_figure(make_result(bars_h1=())))


def test_consistency_has_separate_layer_and_depth_axes():
    figure = consistency_figure(make_result(), removed=[3, 4])
    top, bottom = figure.axes
    assert not top.get_shared_x_axes().joined(top, bottom)
    assert top.get_xlabel() == r"decoder layer $l$" and bottom.get_xlabel().startswith(r"depth $l$")
    assert r"maps $h_l \to h_{l+1}$" in top.get_title()
    assert top.get_xlim()[1] < L and bottom.get_xlim()[1] > L  # layers 0..L-1, depths 0..L
    assert integer_ticks(top) and integer_ticks(bottom)
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert "removed layer" in legend


def test_diagnostics_figure_prints_warnings_and_tolerates_missing_shares():
    result = make_result()
    long = "H0 carries no signal: its layer survival is 1.000 at every layer " * 4
    result["diagnostics"] = diagnostics([long, "depth 0 is degenerate"], share_h0=None)
    figure = diagnostics_figure(result)
    words = texts(figure)
    assert "Warnings (2)" in words and "depth 0 is degenerate" in words
    assert all(len(line) <= 125 for line in words.splitlines())  # the long warning is wrapped
    assert "n/a" in words and "40%" in words and "constant over layers" in words
    assert "1 degenerate depth" in words
    titles = [axis.get_title() for axis in figure.axes]
    assert "Bars per dimension: raw vs kept" in titles and "Lifetimes of the kept bars" in titles
    check_png(diagnostics_png(result))

    result["diagnostics"] = diagnostics([], share_h0=0.6)
    assert "no warnings" in texts(diagnostics_figure(result))


# --- the angular baseline ---------------------------------------------------------------------------------------


@pytest.fixture
def angular():
    from lmms_topo_plugin.scorers.similarity import angular_block_figure

    generator = np.random.default_rng(0)
    points = generator.random((L + 1, 8))
    matrix = [[float(np.linalg.norm(a - b)) for b in points] for a in points]
    return get_method("angular").scorer_class, LayerScores([matrix[l][l + 1] for l in range(L)],
                                                            {"depth_distance_matrix": matrix}), angular_block_figure


def test_angular_figure_shows_the_distance_of_every_block_start(angular):
    scorer_class, scores, figure_of = angular
    matrix = scores.details["depth_distance_matrix"]
    removed = [4, 5, 6]
    figure = figure_of(matrix, removed)
    top, heat = figure.axes[:2]
    starts, distances = top.lines[0].get_data()
    assert list(starts) == list(range(L - 2)) and list(distances) == [matrix[s][s + 3] for s in starts]
    assert "removed block: decoder layers 4–6" in [t.get_text() for t in top.get_legend().get_texts()]
    (shade,) = top.patches
    assert shade.get_x() < 4 and shade.get_x() + shade.get_width() > 6  # the chosen block is shaded
    assert "3 consecutive decoder layers" in top.get_title()
    assert top.get_xlabel() == "block start s = first removed decoder layer" and "angular distance" in top.get_ylabel()
    assert heat.get_ylabel() == "block size n (layers removed)"
    assert heat.images[0].get_array().shape == (L, L)
    check_png(scorer_class.report_plots(scores, removed)["scores"])


def test_angular_report_replaces_the_per_layer_chart(angular):
    from lmms_topo_plugin.report_files import score_figures

    scorer_class, scores, figure_of = angular
    assert len(figure_of(scores.details["depth_distance_matrix"], []).axes) == 2  # the heatmap and its colour bar
    figures = score_figures("angular", scores, [7])
    assert list(figures) == ["scores"]
    check_png(figures["scores"])
    assert scorer_class.report_plots(LayerScores([0.1, 0.2]), [1]) == {}  # scores without the matrix
