"""An HTML gallery of a set of runs: per sample, the source, each inversion's reconstruction and each method's edit,
with the prompts and the sample's metrics. Images are linked, not copied (paths relative to the page), so the page
stays small and works wherever the run folders can be reached from it."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pandas as pd

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
    """Sample id -> source image, found through each job's selection.json (its mapping file's folder)."""
    found: dict[str, Path] = {}
    for run_dir, rows in results.groupby("run_dir"):
        selection = Path(run_dir) / SELECTION_FILE
        if selection.exists():
            root = Path(json.loads(selection.read_text(encoding="utf-8"))["mapping_file"]).parent
            for row in rows.itertuples():
                found.setdefault(row.sample_id, root / "annotation_images" / row.image_path)
    return found


def _figure(path: Path | None, caption: str, page_dir: Path, alt: str) -> str:
    image = (
        f'<img loading="lazy" src="{html.escape(os.path.relpath(path, page_dir))}" alt="{html.escape(alt)}">'
        if path is not None and path.exists()
        else "<div>(no image)</div>"
    )
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _caption(row) -> str:
    parts = [html.escape(f"{row['inversion']}+{row['editor']}")]
    if row["status"] != "ok":
        return parts[0] + f'<br><span class="failed">failed: {html.escape(str(row["error"]))}</span>'
    for key, name, scale, digits in CAPTION_METRICS:
        value = row.get(key)
        if value is not None and pd.notna(value):
            parts.append(f"{name} {value * scale:.{digits}f}")
    return "<br>".join(parts)


def write_gallery(results: pd.DataFrame, page: Path, title: str = "invbench gallery") -> Path:
    """Write `page` (an .html file) for every sample in `results` (rows of load_results, with run_dir)."""
    page.parent.mkdir(parents=True, exist_ok=True)
    sources = source_images(results)
    methods = list(dict.fromkeys(zip(results["inversion"], results["editor"])))
    sections = []
    for sample_id, rows in results.groupby("sample_id", sort=True):
        first = rows.iloc[0]
        by_method = {(r["inversion"], r["editor"]): r for _, r in rows.iterrows()}
        figures = [_figure(sources.get(sample_id), "source", page.parent, "source")]
        shown_reconstructions = set()
        for inversion, editor in methods:
            row = by_method.get((inversion, editor))
            if row is not None and row["status"] == "ok" and inversion not in shown_reconstructions:
                shown_reconstructions.add(inversion)
                recon = Path(row["run_dir"]) / row["reconstruction_image"]
                label = f"reconstruction: {inversion}"
                figures.append(_figure(recon, html.escape(label), page.parent, label))
        for inversion, editor in methods:
            row = by_method.get((inversion, editor))
            if row is None:
                continue
            edited = Path(row["run_dir"]) / row["edited_image"] if row["status"] == "ok" else None
            figures.append(_figure(edited, _caption(row), page.parent, f"edit: {inversion}+{editor}"))
        sections.append(
            f"<section><h3>{html.escape(str(sample_id))} · {html.escape(str(first['category']))}</h3>"
            f'<div class="prompt">{html.escape(str(first["source_prompt"]))} → '
            f"<b>{html.escape(str(first['target_prompt']))}</b></div>"
            f'<div class="images">{"".join(figures)}</div></section>'
        )
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{results['sample_id'].nunique()} samples × {len(methods)} methods. Captions: background PSNR (dB), "
        "CLIP similarity of the edited region, structure distance ×10³.</p>" + "".join(sections) + "</body></html>\n"
    )
    page.write_text(body, encoding="utf-8")
    return page
