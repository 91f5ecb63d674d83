"""Plotly figures for the maps page and `alignlab map`, and their HTML/PNG export.

Thumbnails on hover: plotly's hover labels render only a few text tags (b, i, u, s, sub, sup, em,
span, a, br; no <img>), so a plain plotly figure cannot show an image in its hover box. The HTML
this module writes (`hover_thumbnail_html`) turns plotly's label off and adds a small script: hovering a
point shows that image's name, labels, kNN overlap, neighbours and thumbnail next to the cursor (element
id `alignlab-hover-thumb`) and rings the same image on both maps.

Built to hold 50,000 images: above `MAX_SVG_POINTS` the points are WebGL markers; the page carries each
image's facts once (names, neighbour rows, overlap) rather than as per-point hover strings, coordinates
as float32 (plotly sends numpy arrays base64-encoded); and the thumbnails are either embedded (small
maps: a self-contained file) or, given `thumbnail_url`, fetched only when a point is hovered.

PNG export uses kaleido 1.x, which drives a Chrome/Chromium: `BROWSER_PATH` if set, else Debian's
/usr/bin/chromium, else one found on PATH. Without one, `PngExportUnavailable` says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from alignment.reorganisation import EntropyVsRt

HOVER_THUMB_ID = "alignlab-hover-thumb"
PALETTE = qualitative.Dark24 + qualitative.Light24
CHROME_CANDIDATES = (
    "/usr/bin/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)
MAX_SVG_POINTS = 2000  # above this, WebGL markers keep hover and panning fluid
N_HOVER_NEIGHBOURS = 5


class PngExportUnavailable(FileNotFoundError):
    """No Chrome/Chromium for kaleido, or kaleido failed to render."""


def colour_map(labels) -> dict[str, str]:
    """A stable colour per label (sorted), the same in every figure."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}


def scatter_type(n_points: int) -> type[go.Scatter] | type[go.Scattergl]:
    """SVG markers for small plots, WebGL above `MAX_SVG_POINTS`."""
    return go.Scattergl if n_points > MAX_SVG_POINTS else go.Scatter


def map_pair_figure(points: pd.DataFrame, colour_by: str, titles: tuple[str, str]) -> go.Figure:
    """Two maps side by side in one frame (shared axes), one legend entry per label for both maps.

    Traces come in pairs (before, after) per label with the same points in the same order, which the hover
    script relies on; each point's customdata is its row in `points`.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.04)
    _add_label_pairs(fig, points, colour_by)
    for col in (1, 2):  # rings marking the hovered image on both maps (moved by the hover script)
        fig.add_trace(_hover_ring(), row=1, col=col)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(scaleanchor="x", row=1, col=1)  # equal aspect; the after map shares both axes
    fig.update_xaxes(matches="x", row=1, col=2)
    fig.update_yaxes(matches="y", row=1, col=2)
    fig.update_annotations(font_size=13)  # the subplot titles: two lines each, narrow enough not to overlap
    fig.update_layout(
        height=560,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend_title_text=colour_by,
        hovermode="closest",
    )
    return fig


def _add_label_pairs(fig: go.Figure, points: pd.DataFrame, colour_by: str) -> None:
    """Per label, its before trace (left) and its after trace (right), the same points in the same order and
    one legend entry for both, so toggling a label hides it on both maps and the hover script can pair
    points by position."""
    colours = colour_map(points[colour_by])
    scatter = scatter_type(len(points))
    size = 7 if len(points) <= MAX_SVG_POINTS else 4
    rows = pd.Series(np.arange(len(points), dtype=np.int32), index=points.index)
    for label, group in points.groupby(colour_by, sort=True):
        for col, when in ((1, "before"), (2, "after")):
            fig.add_trace(
                scatter(
                    x=group[f"x_{when}"].to_numpy(np.float32),
                    y=group[f"y_{when}"].to_numpy(np.float32),
                    mode="markers",
                    name=str(label),
                    legendgroup=str(label),
                    showlegend=col == 1,
                    marker={"color": colours[label], "size": size},
                    customdata=rows[group.index].to_numpy(),
                    hoverinfo="none",
                ),
                row=1,
                col=col,
            )


def _hover_ring() -> go.Scatter:
    """An empty ring trace the hover script moves onto the hovered image, so it stands out on both maps."""
    return go.Scatter(
        x=[],
        y=[],
        mode="markers",
        name="hovered",
        showlegend=False,
        hoverinfo="skip",
        marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
    )


def hover_thumbnail_html(
    fig: go.Figure,
    points: pd.DataFrame,
    neighbours: tuple[np.ndarray, np.ndarray],
    thumbnails: list[str] | None,
    *,
    thumbnail_url: str = "thumbs/",
    plotly_js: str | bool = True,
) -> str:
    """A standalone HTML page of a `map_pair_figure` whose hover shows image facts and thumbnails.

    `neighbours`: (before, after) [n, >=5] neighbour rows. `thumbnails`: one data URI (or '') per row, or
    None to load row i's thumbnail from `thumbnail_url + "i.jpg"` when it is hovered. `plotly_js`: True
    embeds plotly.js; a path ending in .js loads it from there instead.
    """
    shown = min(N_HOVER_NEIGHBOURS, neighbours[0].shape[1])
    facts = {
        "names": points["name"].astype(str).tolist(),
        "category": _coded(points["category"]),
        "superordinate": _coded(points["superordinate"]),
        "overlap": np.round(points["knn_overlap"].to_numpy(float), 2).tolist(),
        "before": neighbours[0][:, :shown].tolist(),
        "after": neighbours[1][:, :shown].tolist(),
        "thumbs": thumbnails,
        "thumbUrl": thumbnail_url,
    }
    script = (
        _HOVER_SCRIPT.replace("__FACTS__", json.dumps(facts, separators=(",", ":")))
        .replace("__THUMB_ID__", HOVER_THUMB_ID)
        .replace("__N_TRACES__", str(len(fig.data)))
    )
    return fig.to_html(
        full_html=True,
        include_plotlyjs=plotly_js,
        post_script=script,
        config={"responsive": True},
        default_width="100%",
        default_height=f"{fig.layout.height}px",
    )


def _coded(values: pd.Series) -> dict[str, list]:
    """A column as {names, codes}: far smaller than one string per row when labels repeat."""
    codes, names = pd.factorize(values.astype(str))
    return {"names": names.tolist(), "codes": codes.tolist()}


_HOVER_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var facts = __FACTS__, ringTraces = [__N_TRACES__ - 2, __N_TRACES__ - 1];
var box = document.createElement('div');
box.id = '__THUMB_ID__';
box.style.cssText = 'position:fixed;display:none;pointer-events:none;z-index:1000;padding:4px 6px;' +
  'max-width:300px;font:12px sans-serif;background:white;border:1px solid #888;' +
  'box-shadow:0 2px 6px rgba(0,0,0,.3)';
var img = document.createElement('img');
img.style.cssText = 'display:block;width:96px;height:auto;image-rendering:auto;margin-bottom:3px';
img.onerror = function () { img.style.display = 'none'; };
var text = document.createElement('div');
box.appendChild(img);
box.appendChild(text);
document.body.appendChild(box);
function line(label, value, bold) {
  var el = document.createElement(bold ? 'b' : 'div');
  el.textContent = (label ? label + ': ' : '') + value;
  text.appendChild(el);
  if (bold) { text.appendChild(document.createElement('br')); }
}
function label(coded, row) { return coded.names[coded.codes[row]]; }
function names(rows) { return rows.map(function (r) { return facts.names[r]; }).join(', '); }
gd.on('plotly_hover', function (ev) {
  var p = ev.points[0], row = p.customdata, pair = p.curveNumber - (p.curveNumber % 2);
  // _fullData: plotly has decoded the base64 float32 arrays there (gd.data may still hold them encoded)
  var b = gd._fullData[pair], a = gd._fullData[pair + 1], i = p.pointNumber;
  Plotly.restyle(gd, {x: [[b.x[i]], [a.x[i]]], y: [[b.y[i]], [a.y[i]]]}, ringTraces);
  var src = facts.thumbs ? facts.thumbs[row] : facts.thumbUrl + row + '.jpg';
  img.style.display = src ? 'block' : 'none';
  if (src) { img.src = src; }
  text.textContent = '';
  line('', facts.names[row], true);
  line('', label(facts.category, row) + ' · ' + label(facts.superordinate, row));
  line('kNN overlap', facts.overlap[row].toFixed(2));
  line('before', names(facts.before[row]));
  line('after', names(facts.after[row]));
  var e = ev.event || {clientX: 0, clientY: 0};
  var left = e.clientX - 316;  // left of the cursor
  box.style.left = (left < 4 ? e.clientX + 24 : left) + 'px';
  box.style.top = Math.min(Math.max(e.clientY - 50, 4), window.innerHeight - 220) + 'px';
  box.style.display = 'block';
});
gd.on('plotly_unhover', function () { box.style.display = 'none'; });
"""


def movement_figure(points: pd.DataFrame, moved: pd.DataFrame, colour_by: str) -> go.Figure:
    """The images that moved most, as arrows from their before to their after position (common frame)."""
    fig = go.Figure(_all_images_after(points))
    colours = colour_map(points[colour_by])
    _add_movement_arrows(fig, moved, colours, colour_by)
    fig.add_trace(_moved_most_trace(moved, colours, colour_by))
    fig.update_yaxes(scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(
        height=480,
        title="Images that moved most (arrow: before → after)",
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def _all_images_after(points: pd.DataFrame) -> go.Scatter | go.Scattergl:
    """Every image at its after position, grey and without hover: the backdrop that shows where the moved
    images landed relative to the rest (WebGL and smaller dots for large maps)."""
    return scatter_type(len(points))(
        x=points["x_after"].to_numpy(np.float32),
        y=points["y_after"].to_numpy(np.float32),
        mode="markers",
        name="all images (after)",
        marker={"color": "lightgrey", "size": 5 if len(points) <= MAX_SVG_POINTS else 3},
        hoverinfo="skip",
    )


def _add_movement_arrows(
    fig: go.Figure, moved: pd.DataFrame, colours: dict[str, str], colour_by: str
) -> None:
    """One arrow per moved image from its before to its after position, in its label's colour, so the
    direction of each move reads at a glance."""
    for row in moved.itertuples():
        fig.add_annotation(
            x=row.x_after,
            y=row.y_after,
            ax=row.x_before,
            ay=row.y_before,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowwidth=1.5,
            arrowcolor=colours[getattr(row, colour_by)],
        )


def _moved_most_trace(moved: pd.DataFrame, colours: dict[str, str], colour_by: str) -> go.Scatter:
    """The moved images at their after position, outlined, hovering with their name and their neighbours
    before and after: the arrow heads alone cannot say which image moved or why."""
    return go.Scatter(
        x=moved["x_after"],
        y=moved["y_after"],
        mode="markers",
        name="moved most (after)",
        marker={
            "color": [colours[v] for v in moved[colour_by]],
            "size": 9,
            "line": {"width": 1, "color": "black"},
        },
        customdata=moved[
            ["name", "category", "knn_overlap", "neighbours_before", "neighbours_after"]
        ].to_numpy(),
        hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]})<br>kNN overlap %{customdata[2]:.2f}<br>"
        "before: %{customdata[3]}<br>after: %{customdata[4]}<extra></extra>",
    )


def quality_figure(quality_rows: list[dict]) -> go.Figure:
    """Silhouette and kNN purity at category and superordinate level, before vs after."""
    labels = [f"{r['level']}<br>{r['metric'].replace('_', ' ')}" for r in quality_rows]
    fig = go.Figure(
        [
            go.Bar(
                name=when,
                x=labels,
                y=[r[when] for r in quality_rows],
                text=[f"{r[when]:.2f}" for r in quality_rows],
                textposition="outside",
            )
            for when in ("before", "after")
        ]
    )
    fig.update_layout(
        barmode="group",
        height=380,
        title="Cluster quality before vs after",
        yaxis_range=[min(0, *(r[w] for r in quality_rows for w in ("before", "after"))) - 0.05, 1.1],
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def rsa_figure(categories: list[str], matrices: dict[str, np.ndarray], rhos: dict[str, float]) -> go.Figure:
    """Category-level similarity matrices side by side (model before, after, human), each on its own scale."""
    titles = [f"{name} (ρ vs humans = {rhos[name]:.2f})" if name in rhos else name for name in matrices]
    fig = make_subplots(rows=1, cols=len(matrices), subplot_titles=titles, horizontal_spacing=0.06)
    for col, matrix in enumerate(matrices.values(), start=1):
        fig.add_trace(
            go.Heatmap(
                z=matrix,
                x=categories,
                y=categories,
                colorscale="Viridis",
                showscale=False,
                hovertemplate="%{y} × %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=col, showticklabels=col == 1)
    fig.update_layout(
        height=420,
        title="Representational similarity by category",
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
    )
    return fig


def entropy_rt_figure(before: EntropyVsRt, after: EntropyVsRt) -> go.Figure:
    """Model odd-one-out entropy against human response time, one point per judgment."""
    fig = go.Figure(
        [
            scatter_type(len(result.rt_ms))(
                x=result.entropy.astype(np.float32),
                y=result.rt_ms.astype(np.float32),
                mode="markers",
                opacity=0.5,
                name=f"{when} (Spearman ρ = {result.rho:.2f})",
                marker={"size": 5},
            )
            for when, result in (("before", before), ("after", after))
        ]
    )
    fig.update_layout(
        height=420,
        title="Model entropy vs human response time",
        xaxis_title="model entropy (nats)",
        yaxis_title="response time (ms)",
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def chrome_path() -> str:
    """The browser kaleido should drive, or PngExportUnavailable naming what to install."""
    configured = os.environ.get("BROWSER_PATH", "").strip()
    if configured:
        if found := shutil.which(configured):
            return found
        raise PngExportUnavailable(
            f"BROWSER_PATH={configured!r} is not an executable Chrome/Chromium; "
            "point it at one (e.g. /usr/bin/chromium) or unset it"
        )
    for candidate in CHROME_CANDIDATES:
        if found := shutil.which(candidate):
            return found
    raise PngExportUnavailable(
        "PNG export needs Chrome or Chromium (kaleido renders through it) and none was found: "
        "install Debian's `chromium` package, or set BROWSER_PATH to a Chrome binary. "
        "HTML export works without it."
    )


def write_pngs(figures: dict[Path, go.Figure], width: int = 1400, height: int | None = None) -> list[Path]:
    """Render several figures to PNG in one browser session."""
    import kaleido

    specs = [
        {
            "fig": fig,
            "path": str(path),
            "opts": {"format": "png", "width": width, "height": height or fig.layout.height or 500},
        }
        for path, fig in figures.items()
    ]
    try:
        kaleido.write_fig_from_object_sync(specs, kopts={"path": chrome_path()}, cancel_on_error=True)
    except PngExportUnavailable:
        raise
    except Exception as error:  # kaleido/choreographer raise many kinds; the user needs one message
        raise PngExportUnavailable(f"PNG export through {chrome_path()} failed: {error}") from error
    return list(figures)
