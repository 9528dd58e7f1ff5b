"""Topology figures (and the angular baseline's): valid PNGs, fast at 20,000 bars, and the words a reader needs."""

import io
import time

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.colors import to_hex
from matplotlib.text import Text

from lmms_topo_plugin.scorers.registry import get_method
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
    from lmms_topo_plugin.reports import score_figures

    scorer_class, scores, figure_of = angular
    assert len(figure_of(scores.details["depth_distance_matrix"], []).axes) == 2  # the heatmap and its colour bar
    figures = score_figures("angular", scores, [7])
    assert list(figures) == ["scores"]
    check_png(figures["scores"])
    assert scorer_class.report_plots(LayerScores([0.1, 0.2]), [1]) == {}  # scores without the matrix


# --- marks for keep_first_last and for visual-token pruning ---------------------------------------------------


def hatched_spans(axis) -> list[float]:
    """The centres of the hatched patches of ``axis`` (bars or spans), left to right."""
    return sorted(round(p.get_x() + p.get_width() / 2, 6) for p in axis.patches if p.get_hatch() == "//")


def legend_texts(axis) -> list[str]:
    return [t.get_text() for t in axis.get_legend().get_texts()]


def test_consistency_and_layer_distance_hatch_the_protected_layers():
    from lmms_topo_plugin.topology.plots import layer_distance_figure

    top = consistency_figure(make_result(), removed=[3], protected=[0, L - 1]).axes[0]
    assert hatched_spans(top) == [0, L - 1]
    assert legend_texts(top)[:2] == ["removed layer", "protected (keep_first_last)"]
    assert hatched_spans(consistency_figure(make_result(), removed=[3]).axes[0]) == []
    result = {"layer_distance": [0.1] * L, "layer_distance_h0": [0.2] * L, "params": {"metric": "bottleneck"}}
    axis = layer_distance_figure(result, [4], protected=[0, L - 1]).axes[0]
    assert hatched_spans(axis) == [0, L - 1] and "protected (keep_first_last)" in legend_texts(axis)


def test_angular_hatches_the_block_starts_keep_first_last_rules_out(angular):
    _, scores, figure_of = angular
    top = figure_of(scores.details["depth_distance_matrix"], [4, 5, 6], [0, L - 1]).axes[0]
    # a block of 3 starting at s holds layers s..s+2: start 0 holds layer 0, start L-3 holds layer L-1
    assert hatched_spans(top) == [0, L - 3]
    assert ("start not allowed: its block would hold layer 0 or 11, protected (keep_first_last)"
            in legend_texts(top))


def capture(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` (a function returning a Figure) so that every figure it builds is kept."""
    built, original = [], getattr(module, name)

    def keep(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(module, name, keep)
    return built


def bars(axis) -> list:
    (container,) = axis.containers
    return list(container)


def prune(checkpoint, report_dir, model_args: str) -> dict:
    """``topo-prune prune`` into ``report_dir``; the pointer file it leaves."""
    import json

    from lmms_topo_plugin.cli.main import main

    assert main(["prune", "--model-args", f"pretrained={checkpoint},device=cpu,calib_limit=4,{model_args}",
                 "--report-dir", str(report_dir)]) == 0
    return json.loads((report_dir / "topo_pruned_latest.json").read_text())


def test_prune_marks_protected_layers_and_plots_the_visual_tokens(tiny_checkpoints, tmp_path, monkeypatch):
    import json

    from lmms_topo_plugin import reports as report_files
    from lmms_topo_plugin.tokens import plots as token_plots

    scores_figures = capture(monkeypatch, report_files, "layer_scores_figure")
    token_figures = capture(monkeypatch, token_plots, "token_figure")
    checkpoint = tiny_checkpoints("llava", 6)
    pointer = prune(checkpoint, tmp_path / "r", "method=block_influence,n_remove=1,token_method=fastv,"
                    "token_keep=0.5,token_layer=1")
    stem = pointer["report"].removesuffix(".json")
    assert pointer["plots"] == [f"{stem}_scores.png", f"{stem}_tokens.png"]
    report = json.loads((tmp_path / "r" / pointer["report"]).read_text())
    assert report["plots"] == {"scores": f"{stem}_scores.png", "tokens": f"{stem}_tokens.png"}
    for name in pointer["plots"]:
        check_png((tmp_path / "r" / name).read_bytes())
    (removed,) = report["plan"]["removed_layers"]
    assert 0 < removed < 5

    (scores,) = scores_figures
    axis = scores.axes[0]
    assert hatched_spans(axis) == [0, 5]  # the first and the last layer, whatever they scored
    colours = [to_hex(bar.get_facecolor()) for bar in bars(axis)]
    assert colours == ["#bdbdbd" if layer in (0, 5) else "#d62728" if layer == removed else "#1f77b4"
                       for layer in range(6)]
    assert [(t.get_text(), t.xy[0]) for t in axis.texts] == [("protected", 0), ("protected", 5)]
    assert legend_texts(axis) == ["kept", "removed", "protected (keep_first_last)"]
    assert axis.get_title() == (f"block_influence: removed [{removed}] of 6 layers (red); layers 0 and 5 protected "
                                "(keep_first_last)\n+ visual-token pruning token_method=fastv (token_keep=0.5, "
                                "from decoder layer 1)")

    (tokens,) = token_figures
    axis = tokens.axes[0]
    assert [bar.get_height() for bar in bars(axis)] == [100, 50, 50, 50, 50]  # % of the visual tokens per layer
    assert hatched_spans(axis) == []
    assert axis.get_title() == ("visual-token pruning token_method=fastv (token_keep=0.5, from decoder layer 1)\n"
                                "per decoder layer during prefill: text tokens are never dropped\n"
                                "on the 5 layers left after method=block_influence removed 1 of 6")
    kept = [layer for layer in range(6) if layer != removed]
    assert [t.get_text() for t in axis.get_xticklabels()] == [f"{i}\n({k})" for i, k in enumerate(kept)]
    assert legend_texts(axis) == ["visual tokens the layer computes", "fastv selection at layer 1: keeps 50%"]
    (stage,) = axis.lines
    assert list(stage.get_xdata()) == [0.5, 0.5]  # between layer 0 (all tokens) and layer 1 (half)

    # keep_first_last=false, no token pruning: nothing protected, no token plot, a title without either
    pointer = prune(checkpoint, tmp_path / "free", "method=block_influence,n_remove=1,keep_first_last=false")
    assert [name.rsplit("_", 1)[1] for name in pointer["plots"]] == ["scores.png"]
    axis = scores_figures[-1].axes[0]
    assert hatched_spans(axis) == [] and len(axis.texts) == 0 and legend_texts(axis) == ["kept", "removed"]
    assert axis.get_title() == f"block_influence: removed {pointer['removed_layers']} of 6 layers (red)"
    assert len(token_figures) == 1


def test_token_pruning_alone_writes_only_the_token_plot(tiny_checkpoints, tmp_path, monkeypatch):
    from lmms_topo_plugin.tokens import plots as token_plots

    token_figures = capture(monkeypatch, token_plots, "token_figure")
    pointer = prune(tiny_checkpoints("llava", 6), tmp_path / "r", "token_method=halfv,token_keep=0.25,"
                    "token_layer=1,token_ssr_mode=freeze,token_ssr_layer=3")
    assert pointer["plots"] == [pointer["report"].removesuffix(".json") + "_tokens.png"]
    check_png((tmp_path / "r" / pointer["plots"][0]).read_bytes())
    (figure,) = token_figures
    axis = figure.axes[0]
    assert [bar.get_height() for bar in bars(axis)] == [100, 25, 25, 25, 25, 25]
    assert hatched_spans(axis) == [3, 4, 5]  # frozen from the SSR layer on
    assert axis.get_title() == ("visual-token pruning token_method=halfv (token_keep=0.25, anchor 0.1, IVR layer 1, "
                                "SSR layer 3: freeze)\nper decoder layer during prefill: text tokens are never dropped")
    assert legend_texts(axis) == ["visual tokens the layer computes", "frozen (halfv step 2: keys and values only)",
                                  "IVR layer 1 (halfv step 1): keeps 25%",
                                  "SSR layer 3 (halfv step 2: freeze): visual tokens frozen"]
    assert [t.get_text() for t in axis.get_xticklabels()] == [str(layer) for layer in range(6)]
    assert [t.get_text() for t in axis.texts] == ["100%", "25%", "25% frozen"]


def test_token_schedule_of_each_method():
    from lmms_topo_plugin.tokens.plots import LayerTokens, token_schedule, token_summary

    halfv = {"method": "halfv", "keep": 0.25, "layer": 2, "seed": 0, "anchor": 0.1, "ssr_mode": "top5",
             "ssr_layer": 4}
    assert token_schedule(halfv, 6) == [LayerTokens(1.0), LayerTokens(1.0), LayerTokens(0.25), LayerTokens(0.25),
                                        LayerTokens(0.05), LayerTokens(0.05)]
    # top5 keeps 5% of the original tokens, but never more than step 1 left
    assert [entry.share for entry in token_schedule(halfv | {"keep": 0.02}, 6)] == [1.0, 1.0, 0.02, 0.02, 0.02, 0.02]
    random = {"method": "random", "keep": 0.75, "layer": 1, "seed": 3}
    assert token_schedule(random, 3) == [LayerTokens(1.0)] + [LayerTokens(0.75)] * 2
    assert token_summary(random) == ("visual-token pruning token_method=random (token_keep=0.75, seed=3, from "
                                     "decoder layer 1)")
    assert token_summary(halfv | {"ssr_mode": "off", "ssr_layer": None}) == (
        "visual-token pruning token_method=halfv (token_keep=0.25, anchor 0.1, IVR layer 2, no step 2)")


def test_protected_layers_of_a_report_without_candidates():
    from lmms_topo_plugin.pipeline import PruneReport
    from lmms_topo_plugin.reports import protected_layers

    def report(plan, **config):
        return PruneReport("s", "p", "llava", config, {"num_layers": 6, **plan}, [], 0, 0)

    assert protected_layers(report({"candidates": [1, 2, 3, 4]})) == [0, 5]
    assert protected_layers(report({"candidates": list(range(6))})) == []
    assert protected_layers(report({}, keep_first_last=True)) == [0, 5]  # written before plans had candidates
    assert protected_layers(report({}, keep_first_last=False)) == []
