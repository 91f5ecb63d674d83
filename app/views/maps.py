"""Maps: the same images under two representations, how their neighbourhoods changed, and how each
representation compares with human judgments. Computation lives in app/map_cache.py (cached)."""

from __future__ import annotations

import base64

import pandas as pd
import streamlit as st

from app import map_cache
from app.participant.blocks import api_prefix
from app.resources import get_db
from app.results_display import caveat_lines, display_table
from db.settings import database_url
from workflows.maps.bundle import MapBundle
from workflows.maps.data import EMBED_THUMBNAILS_MAX
from workflows.pipeline.evaluation import read_results
from workflows.pipeline.loop import latest_loop

COLOUR_CHOICES = ("category", "superordinate")


def choose_representations_ui(
    options: list[tuple[str, str]], preferred: tuple[str, str] | None
) -> tuple[str, str, str, str, int]:
    """Before/after representation, method, colouring and k, as plain values. Defaults: the latest closed
    loop's base features vs its AligNet student, else the newest raw features vs the newest run."""
    labels = dict(options)
    refs = list(labels)
    raw = [ref for ref in refs if ref.endswith(":raw_embeddings")]
    default_before = refs.index(raw[0]) if raw else min(1, len(refs) - 1)
    default_after = 0
    if preferred and all(ref in refs for ref in preferred):
        default_before, default_after = refs.index(preferred[0]), refs.index(preferred[1])
    left, right = st.columns(2)
    before = left.selectbox("Before", refs, index=default_before, format_func=labels.get, key="map_before")
    after = right.selectbox("After", refs, index=default_after, format_func=labels.get, key="map_after")
    a, b, c = st.columns(3)
    method = a.radio(
        "Map",
        ("umap", "pca"),
        format_func=str.upper,
        horizontal=True,
        key="map_method",
        help="UMAP keeps neighbourhoods (default); PCA is linear and instant.",
    )
    colour_by = b.radio("Colour by", COLOUR_CHOICES, horizontal=True, key="map_colour")
    k = c.slider("Neighbours per image (k)", 3, 30, 10, key="map_k")
    return before, after, method, colour_by, k


def summary_ui(summary: list[dict]) -> None:
    table = pd.DataFrame(summary)
    table["change"] = table["after"] - table["before"]
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("before", "after", "change")
        },
    )


def moved_most_ui(moved: pd.DataFrame, thumbs: dict[int, str], rows: list[int]) -> int | None:
    """The moved-most table with thumbnails; returns the selected image's map row, if any."""
    table = moved.assign(thumbnail=[thumbs[i] or None for i in rows])
    shown = [
        "thumbnail",
        "name",
        "category",
        "superordinate",
        "knn_overlap",
        "neighbours_before",
        "neighbours_after",
    ]
    event = st.dataframe(
        table[shown],
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="moved_table",
        column_config={
            "thumbnail": st.column_config.ImageColumn("image"),
            "knn_overlap": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    selected = event.selection.rows if event else []
    return rows[selected[0]] if selected else None


def image_panel_ui(
    row: int, points: pd.DataFrame, thumbs: dict[int, str], neighbours: dict[str, list[int]]
) -> None:
    st.markdown(
        f"**{points['name'].iloc[row]}** · {points['category'].iloc[row]} · "
        f"{points['superordinate'].iloc[row]} · kNN overlap {points['knn_overlap'].iloc[row]:.2f}"
    )
    if thumbs[row]:
        st.image(_decode(thumbs[row]), width=96)
    for when, rows in neighbours.items():
        st.caption(f"Nearest neighbours {when}")
        columns = st.columns(max(len(rows), 1))
        for column, neighbour in zip(columns, rows, strict=False):
            column.image(
                _decode(thumbs[neighbour]) if thumbs[neighbour] else None,
                width=64,
                caption=str(points["category"].iloc[neighbour]),
            )


def maps_ui(bundle: MapBundle) -> None:
    """The interactive maps, loaded by the browser from the files written once (not sent in the page), and
    a download that reads the same file when clicked."""
    st.iframe(bundle.url(api_prefix()), height=600)
    st.download_button(
        "Download the maps (interactive HTML)",
        bundle.standalone_html,
        file_name="maps.html",
        mime="text/html",
    )
    note = "PNG: use the camera button in a figure's toolbar, or `alignlab map --out DIR` for every figure."
    if bundle.n_images > EMBED_THUMBNAILS_MAX:
        note += (
            f" With {bundle.n_images:,} images the downloaded file shows thumbnails only while this server "
            "runs; `alignlab map --out DIR` writes a folder that carries them."
        )
    st.caption(note)


def evaluation_ui(loop) -> None:
    """The latest closed loop's before/after table: base vs teacher vs AligNet vs UnAligNet student, one row
    per level and representation (a column group per representation is too wide to show whole)."""
    try:
        table = display_table(read_results(loop))
    except ValueError as error:
        st.info(str(error))
        return
    st.caption(
        f"Closed-loop run {loop.id}: accuracy [95% CI] on the study's held-out judgments, seen images "
        "(held-out judgments of images the teacher trained on), unseen images (images no fit saw) and "
        "unseen subjects (people the fit never learnt from, seen images) side by side (per triplet the "
        "share of its judgments the model agrees with; dot similarity, ties wrong), gain over the base with "
        "a paired 95% CI, normalised = (acc − 1/3)/(noise ceiling − 1/3), ρ(H,RT) = Spearman of model "
        "entropy with the triplet's median human response time."
    )
    st.dataframe(table, hide_index=True, width="stretch", height=35 * (len(table) + 1) + 3)
    for note in ("unseen_note", "subject_note"):
        if loop.metrics.get(note):
            st.warning(loop.metrics[note])
    for line in caveat_lines(
        loop.metrics
    ):  # results that mean nothing say so (workflows/pipeline/caveats.py)
        st.warning(line)


def _decode(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


st.title("Maps")
st.caption(
    "The same images under two representations, in one frame: the after map is rotated/reflected onto "
    "the before map. Hover a point to see its image and neighbours; the ring marks it on both maps."
)
url = database_url()
options = map_cache.representations(url)
if len(options) < 2:
    st.info(
        "Maps need two runs with an `embeddings` artifact (feature extraction, teacher or student runs). "
        "Start them on the Alignment page, or run `alignlab map --help` for the file convention."
    )
    st.stop()
loop = latest_loop(get_db())
preferred = (
    (f"{loop.metrics['teacher_run']}:raw_embeddings", f"{loop.metrics['alignet_run']}:embeddings")
    if loop
    else None
)
before, after, method, colour_by, k = choose_representations_ui(options, preferred)
if method == "umap" and not map_cache.layouts_on_disk(url, before, after, "umap", 0):
    map_cache.umap_ready()
try:
    built = map_cache.figures(url, before, after, method, 0, k, colour_by)
except (ValueError, LookupError, FileNotFoundError) as error:
    st.error(str(error))
    st.stop()
summary_ui(built.summary)
bundle = map_cache.map_bundle(url, before, after, method, 0, k, colour_by)
if not bundle.html_file.is_file():  # pruned on disk by newer maps (workflows/maps/bundle.py): write again
    map_cache.map_bundle.clear()
    bundle = map_cache.map_bundle(url, before, after, method, 0, k, colour_by)
maps_ui(bundle)

st.subheader("Images whose neighbours changed most")
reorg = map_cache.reorganisation(url, before, after, k)
moved_rows = reorg.moved_most(len(built.moved)).tolist()
left, right = st.columns([3, 2])
with left:
    selected = moved_most_ui(
        built.moved, map_cache.thumbnails(url, before, after, tuple(moved_rows)), moved_rows
    )
with right:
    if selected is None:
        st.caption("Select a row to see the image and its nearest neighbours before and after.")
    else:
        panel = {
            "before": reorg.neighbours_before[selected][:5].tolist(),
            "after": reorg.neighbours_after[selected][:5].tolist(),
        }
        shown = tuple(sorted({selected, *panel["before"], *panel["after"]}))
        image_panel_ui(selected, built.points, map_cache.thumbnails(url, before, after, shown), panel)
st.plotly_chart(built.figures["moved_most"], key="moved_chart")
st.plotly_chart(built.figures["quality"], key="quality_chart")
if "rsa" in built.figures:
    st.plotly_chart(built.figures["rsa"], key="rsa_chart")
    st.plotly_chart(built.figures["entropy_rt"], key="entropy_chart")
else:
    st.info(
        "No human judgments of these images yet: RSA and entropy-vs-RT appear once the runs' study has some."
    )

st.subheader("Evaluation on held-out human judgments")
if loop is None:
    st.info(
        "Run the closed loop (Alignment page, or `alignlab align --study SLUG`) for the before/after table."
    )
else:
    evaluation_ui(loop)
