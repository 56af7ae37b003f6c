"""An HTML gallery of a set of runs: per sample, the source, each inversion's reconstruction and each method's edit,
with the prompts and the sample's metrics. Images are linked, not copied (paths relative to the page), so the page
stays small and works wherever the run folders can be reached from it."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pandas as pd

from invbench.paths import contained_path_problem
from invbench.results import SELECTION_FILE

CAPTION_METRICS = (
    ("psnr_unedit_part", "PSNR", 1, 2),
    ("clip_similarity_target_image_edit_part", "CLIP-edit", 1, 2),
    ("structure_distance", "SD×10³", 1e3, 1),
)
STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
section { border-top: 1px solid #ccc; padding: 0.6em 0; }
.images { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 180px; font-size: 12px; }
figure img { width: 180px; height: 180px; object-fit: cover; background: #eee; }
.failed { color: #b00; }
.prompt { font-size: 14px; }
"""


def source_images(results: pd.DataFrame) -> dict[str, Path]:
    """Sample id -> source image: the row's image_path inside its `images_root` (every dataset format records it), or
    for rows that predate it inside the PIE-Bench layout of its mapping file (or its job's selection.json); only
    paths that stay inside that folder are linked."""
    found: dict[str, Path] = {}
    for run_dir, rows in results.groupby("run_dir"):
        selection = Path(run_dir) / SELECTION_FILE
        job_mapping = json.loads(selection.read_text(encoding="utf-8"))["mapping_file"] if selection.exists() else None
        for row in rows.to_dict("records"):
            if row["sample_id"] in found:
                continue
            images_root = row.get("images_root")
            if not isinstance(images_root, str):
                mapping_file = row.get("mapping_file") if isinstance(row.get("mapping_file"), str) else job_mapping
                if mapping_file is None:
                    continue
                images_root = Path(mapping_file).parent / "annotation_images"
            if contained_path_problem(row.get("image_path"), Path(images_root)) is None:
                found[row["sample_id"]] = Path(images_root) / row["image_path"]
    return found


def _image(row, column: str) -> Path | None:
    """A row's image (edited_image or reconstruction_image), relative to the folder its images live in: the job
    folder, or for score.py rows the folder they were scored from; None when the row has none or it would lie
    outside that folder."""
    folder = Path(row["scored_from"] if isinstance(row.get("scored_from"), str) else row["run_dir"])
    value = row.get(column)
    if row["status"] != "ok" or contained_path_problem(value, folder) is not None:
        return None
    return folder / value


def _figure(path: Path | None, caption: str, page_dir: Path, alt: str) -> str:
    image = (
        f'<img loading="lazy" src="{html.escape(os.path.relpath(path, page_dir))}" alt="{html.escape(alt)}">'
        if path is not None and path.exists()
        else "<div>(no image)</div>"
    )
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _name(row, setups: bool) -> str:
    """inversion+editor, with the setup letter when the rows hold several setups."""
    return f"{row['inversion']}+{row['editor']}" + (f" [{row['setup']}]" if setups else "")


def _caption(row, setups: bool) -> str:
    parts = [html.escape(_name(row, setups))]
    if row["status"] != "ok":
        return parts[0] + f'<br><span class="failed">failed: {html.escape(str(row["error"]))}</span>'
    for key, name, scale, digits in CAPTION_METRICS:
        value = row.get(key)
        if value is not None and pd.notna(value):
            parts.append(f"{name} {value * scale:.{digits}f}")
    return "<br>".join(parts)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def write_gallery(results: pd.DataFrame, page: Path, title: str = "invbench gallery") -> Path:
    """Write `page` (an .html file) for every sample in `results` (rows of reports.paper.prepare: with run_dir and
    setup letters)."""
    page.parent.mkdir(parents=True, exist_ok=True)
    sources = source_images(results)
    keys = ["inversion", "editor", "setup"]
    methods = list(dict.fromkeys(results[keys].itertuples(index=False, name=None)))
    setups = results["setup"].nunique() > 1
    sections, missing = [], 0
    for sample_id, rows in results.groupby("sample_id", sort=True):
        first = rows.iloc[0]
        by_method = {tuple(r[keys]): r for _, r in rows.iterrows()}
        figures = [_figure(sources.get(sample_id), "source", page.parent, "source")]
        shown_reconstructions = set()
        for method in methods:
            row = by_method.get(method)
            reconstruction = None if row is None else _image(row, "reconstruction_image")
            if reconstruction is not None and (method[0], method[2]) not in shown_reconstructions:
                shown_reconstructions.add((method[0], method[2]))
                label = f"reconstruction: {method[0]}" + (f" [{method[2]}]" if setups else "")
                figures.append(_figure(reconstruction, html.escape(label), page.parent, label))
        for method in methods:
            row = by_method.get(method)
            if row is None:
                continue
            edited = _image(row, "edited_image")
            if edited is None and row["status"] == "ok":
                missing += 1
            figures.append(_figure(edited, _caption(row, setups), page.parent, f"edit: {_name(row, setups)}"))
        sections.append(
            f"<section><h3>{html.escape(str(sample_id))} · {html.escape(str(first['category']))}</h3>"
            f'<div class="prompt">{html.escape(str(first["source_prompt"]))} → '
            f"<b>{html.escape(str(first['target_prompt']))}</b></div>"
            f'<div class="images">{"".join(figures)}</div></section>'
        )
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{_count(results['sample_id'].nunique(), 'sample')} × {_count(len(methods), 'method')}. "
        "Captions: background PSNR (dB), "
        "CLIP similarity of the edited region, structure distance ×10³; a metric a row lacks is left out. Failed "
        "samples show their error"
        + (f"; {missing} successful rows name no image inside their folder and show none" if missing else "")
        + ".</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    page.write_text(body, encoding="utf-8")
    return page


def write_frontier_strips(results: pd.DataFrame, result, page: Path) -> Path:
    """Write `page`: per method of a frontier report (reports/frontier.py), one sample's edit at each point of its
    front, in order of increasing preservation, captioned with the setting and the sample's own metrics."""
    page.parent.mkdir(parents=True, exist_ok=True)
    sections = []
    for method in result.methods:
        front = method.points.iloc[method.front]
        rows = results[results["config_hash"].isin(front["config_hash"]) & (results["status"] == "ok")]
        shared = set.intersection(
            *(set(rows.loc[rows["config_hash"] == d, "sample_id"]) for d in front["config_hash"])
        )
        if not shared:
            continue
        sample_id = min(shared)  # one sample every front point edited
        figures = []
        for point in front.itertuples():
            row = rows[(rows["config_hash"] == point.config_hash) & (rows["sample_id"] == sample_id)].iloc[-1]
            caption = f"{html.escape(point.setting)}<br>{_caption(row, False)}"
            figures.append(_figure(_image(row, "edited_image"), caption, page.parent, point.setting))
        first = rows[rows["sample_id"] == sample_id].iloc[0]
        sections.append(
            f"<section><h3>{html.escape(method.label)} · {html.escape(method.method['model'])}: sample "
            f"{html.escape(str(sample_id))}</h3><div class='prompt'>{html.escape(str(first['source_prompt']))} → "
            f"<b>{html.escape(str(first['target_prompt']))}</b></div><div class='images'>{''.join(figures)}</div>"
            "</section>"
        )
    title = "invbench frontiers: one sample along each method's front"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head>"
        f"<body><h1>{title}</h1><p>Left to right: the front's settings by increasing background preservation.</p>"
        + "".join(sections)
        + "</body></html>\n",
        encoding="utf-8",
    )
    return page
