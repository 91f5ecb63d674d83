"""Write the maps and reorganisation figures of two runs to a directory, with a short HTML report.

Files: maps.html (hover shows thumbnails), report.html (summary, moved-most table, all figures),
metrics.json, moved_most.csv, and one .png per figure unless PNG export is switched off. Maps of more
than EMBED_THUMBNAILS_MAX images keep maps.html small: it loads plotly.min.js and thumbs/ROW.jpg (the
stored thumbnails, linked or copied) from beside it, so move the folder, not the file.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from alignment.maps import MapConfig, PairedMaps
from alignment.reorganisation import Reorganisation
from workflows.maps.analysis import HumanComparison, moved_most_table, points_table, summary_rows
from workflows.maps.data import EMBED_THUMBNAILS_MAX, MapInputs, thumbnail_data_uris, thumbnail_file
from workflows.maps.figures import (
    entropy_rt_figure,
    hover_thumbnail_html,
    map_pair_figure,
    movement_figure,
    quality_figure,
    rsa_figure,
    write_pngs,
)

MOVED_COLUMNS = [
    "name",
    "category",
    "superordinate",
    "knn_overlap",
    "map_displacement",
    "neighbours_before",
    "neighbours_after",
]


@dataclass(frozen=True)
class MapFigures:
    """Every figure of one analysis, by file stem, plus what the report needs besides them."""

    points: pd.DataFrame
    moved: pd.DataFrame
    figures: dict[str, go.Figure]
    summary: list[dict[str, object]]
    neighbours: tuple[np.ndarray, np.ndarray]  # [n, <=5] nearest rows before / after, for the hover

    def maps_html(self, thumbnails: list[str] | None, plotly_js: str | bool) -> str:
        """The hover-thumbnail page of the two maps (workflows.maps.figures.hover_thumbnail_html)."""
        return hover_thumbnail_html(
            self.figures["maps"], self.points, self.neighbours, thumbnails, plotly_js=plotly_js
        )


def build_figures(
    inputs: MapInputs,
    maps: PairedMaps,
    reorg: Reorganisation,
    humans: HumanComparison | None,
    colour_by: str = "category",
    n_moved: int = 20,
) -> MapFigures:
    points = points_table(inputs, maps, reorg)
    moved = moved_most_table(points, reorg, n_moved)
    method = maps.config.method.upper()
    figures = {
        "maps": map_pair_figure(
            points,
            colour_by,
            (
                f"Before ({method})<br>{inputs.before.label}",
                f"After ({method}, aligned)<br>{inputs.after.label}",
            ),
        ),
        "moved_most": movement_figure(points, moved, colour_by),
        "quality": quality_figure(reorg.quality_table()),
    }
    if humans:
        rsa = humans.rsa
        figures["rsa"] = rsa_figure(
            rsa.categories,
            {
                "model before": rsa.category_before,
                "model after": rsa.category_after,
                "human": rsa.category_human,
            },
            {"model before": rsa.before.rho, "model after": rsa.after.rho},
        )
        figures["entropy_rt"] = entropy_rt_figure(humans.entropy_before, humans.entropy_after)
    shown = min(5, reorg.k)
    return MapFigures(
        points,
        moved,
        figures,
        summary_rows(reorg, humans),
        (reorg.neighbours_before[:, :shown], reorg.neighbours_after[:, :shown]),
    )


def write_map_report(
    out_dir: Path,
    inputs: MapInputs,
    maps: PairedMaps,
    result: MapFigures,
    *,
    png: bool = True,
) -> list[Path]:
    """Write every file into out_dir (created); PNGs last, so a PNG failure leaves the HTML usable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        out_dir / "maps.html",
        out_dir / "report.html",
        out_dir / "metrics.json",
        out_dir / "moved_most.csv",
    ]
    paths = inputs.stimuli["thumbnail_path"].tolist()
    if len(paths) <= EMBED_THUMBNAILS_MAX:
        written[0].write_text(result.maps_html(thumbnail_data_uris(paths), plotly_js=True))
    else:
        written[0].write_text(result.maps_html(None, plotly_js=PLOTLY_JS))
        written += [write_plotly_js(out_dir), *write_thumbnail_files(out_dir / "thumbs", paths)]
    written[1].write_text(_report_html(inputs, maps.config, result))
    written[2].write_text(json.dumps(_metrics(inputs, maps, result), indent=2))
    result.moved[["id", *MOVED_COLUMNS]].to_csv(written[3], index=False)
    if png:
        written += write_pngs({out_dir / f"{stem}.png": fig for stem, fig in result.figures.items()})
    return written


PLOTLY_JS = "plotly.min.js"


def plotly_js_file() -> Path:
    """plotly.js as shipped with the plotly package (the version its figures are written for)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / PLOTLY_JS


def write_plotly_js(out_dir: Path) -> Path:
    target = out_dir / PLOTLY_JS
    shutil.copyfile(plotly_js_file(), target)
    return target


def write_thumbnail_files(folder: Path, paths: list[str | None]) -> list[Path]:
    """thumbs/ROW.jpg for every row with a stored thumbnail: hard links where the file system allows (no
    copy of 50,000 files), else copies. Returns the folder, once."""
    folder.mkdir(parents=True, exist_ok=True)
    for row, path in enumerate(paths):
        source, target = thumbnail_file(path), folder / f"{row}.jpg"
        if source is None:
            continue
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return [folder]


def _metrics(inputs: MapInputs, maps: PairedMaps, result: MapFigures) -> dict[str, object]:
    return {
        "before_run": inputs.before.run_id,
        "after_run": inputs.after.run_id,
        "n_images": len(inputs.stimuli),
        "map": asdict(maps.config),
        "procrustes_disparity": maps.disparity,
        "summary": result.summary,
    }


def _report_html(inputs: MapInputs, config: MapConfig, result: MapFigures) -> str:
    summary = pd.DataFrame(result.summary).to_html(index=False, float_format="{:.3f}".format, border=0)
    moved = result.moved[MOVED_COLUMNS].to_html(index=False, float_format="{:.2f}".format, border=0)
    divs = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0))
        for i, fig in enumerate(result.figures.values())
    ]
    title = f"{inputs.before.label} → {inputs.after.label}"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>AlignLab map: {html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}}
td,th{{padding:2px 8px;text-align:left}}</style>
</head><body><h1>How the representation reorganised</h1>
<p>Before: <b>{html.escape(inputs.before.label)}</b>; after: <b>{html.escape(inputs.after.label)}</b>;
{len(inputs.stimuli)} images; {config.method.upper()} maps (seed {config.seed}), after map aligned to the
before map by Procrustes. Neighbourhood and cluster measures use cosine similarity in the full representation.
<a href="maps.html">maps.html</a> shows each image's thumbnail on hover.</p>
<h2>Summary</h2>{summary}<h2>Images whose neighbours changed most</h2>{moved}
<h2>Figures</h2>{"".join(divs)}</body></html>"""
