"""Published numbers to hold our tables against (`aggregate.py --published todinv_table1`).

Data files live in reports/published/ as CSV with `#` comment lines naming their source; method names are the
paper's and are mapped to our registry names below. Only rows on the same benchmark protocol are comparable, and
only when our rows ran on the same base model with real metric backbones: the comparison says so when they did not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from invbench.errors import ConfigError
from reports.paper import PaperTable

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
# paper column -> our table column (both at the papers' scale)
PUBLISHED_COLUMNS = {
    "structure_distance_e3": "structure_distance",
    "psnr": "psnr_unedit_part",
    "lpips_e3": "lpips_unedit_part",
    "mse_e4": "mse_unedit_part",
    "ssim_e2": "ssim_unedit_part",
    "clip_whole": "clip_similarity_target_image",
    "clip_edited": "clip_similarity_target_image_edit_part",
    "seconds_per_image": "total_seconds",
}
# the papers' method names -> registry names (a dagger marks the SDXL-Turbo rows: not our base models)
PAPER_NAMES = {
    "DDIM": "ddim",
    "NTI": "nti",
    "NPI": "npi",
    "StyleD": "stylediffusion",
    "AIDI": "aidi",
    "FPI": "fpi",
    "NMG": "nmg",
    "ProxEdit": "proxedit",
    "PNPInv": "directinversion",
    "SPDInv": "spdinv",
    "TODInv": "todinv",
    "ReNoise": "renoise",
    "P2P": "p2p",
    "MasaCtrl": "masactrl",
    "PNP": "pnp",
    "P2P-Zero": "pix2pix_zero",
}


def load_published(name_or_path: str) -> tuple[pd.DataFrame, str]:
    """(rows with registry names and our column names, the source text) of a shipped name or a CSV path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PUBLISHED_DIR / f"{name_or_path}.csv"
    if not path.is_file():
        shipped = sorted(p.stem for p in PUBLISHED_DIR.glob("*.csv"))
        raise ConfigError(f"--published {name_or_path}: no such file; shipped tables: {shipped}, or give a CSV path")
    source = " ".join(
        line.removeprefix("#").strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    )
    frame = pd.read_csv(path, comment="#", na_values=["-"])
    missing = {"inversion", "editor", *PUBLISHED_COLUMNS} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: columns {sorted(missing)} are missing; expected {list(PUBLISHED_COLUMNS)}")
    frame["inversion"] = frame["inversion"].map(lambda name: PAPER_NAMES.get(name, name.lower()))
    frame["editor"] = frame["editor"].map(lambda name: PAPER_NAMES.get(name, name.lower()))
    return frame.rename(columns=PUBLISHED_COLUMNS), source


def compare_with_published(table: PaperTable, published: pd.DataFrame) -> pd.DataFrame:
    """One row per (our method, metric) that the published table also has: our mean and interval, the published
    value, the difference (ours − published) and whether the published value lies inside our interval."""
    keys = [c.key for c in table.columns if c.key in published.columns]
    merged = table.cells.merge(published, on=["inversion", "editor"], suffixes=("", "_published"))
    rows = []
    for row in merged.itertuples(index=False):
        row = row._asdict()
        for key in keys:
            ours, theirs = row[key], row[f"{key}_published"]
            low, high = row[f"{key}_low"], row[f"{key}_high"]
            rows.append(
                {
                    "inversion": row["inversion"],
                    "editor": row["editor"],
                    "setup": row["setup"],
                    "metric": key,
                    "ours": ours,
                    "ours_low": low,
                    "ours_high": high,
                    "published": theirs,
                    "delta": ours - theirs,
                    "published_inside_our_interval": bool(low <= theirs <= high) if not np.isnan(theirs) else None,
                }
            )
    return pd.DataFrame(rows)


def published_markdown(comparison: pd.DataFrame, source: str, setups: str, real_setup: bool) -> str:
    """Wide Markdown: per method, each metric as 'ours / published (Δ)'."""
    lines = [f"**Ours vs published** ({source})", ""]
    if comparison.empty:
        return "\n".join(lines + ["No method of these runs appears in the published table."]) + "\n"
    metrics = list(dict.fromkeys(comparison["metric"]))
    lines += ["| Inversion | Editing | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for (inversion, editor, _), part in comparison.groupby(["inversion", "editor", "setup"], sort=False):
        by_metric = part.set_index("metric")
        cells = []
        for metric in metrics:
            r = by_metric.loc[metric]
            theirs = "-" if np.isnan(r["published"]) else f"{r['published']:.2f}"
            delta = "" if np.isnan(r["published"]) else f" ({r['delta']:+.2f})"
            cells.append(f"{r['ours']:.2f} / {theirs}{delta}")
        lines.append(f"| {inversion} | {editor} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- Our setup: {setups}. Δ = ours − published; the CSV says whether each published value lies inside "
        "our interval.",
    ]
    if not real_setup:
        lines.append(
            "- WARNING: these rows did not run on real weights with real metric backbones (see the setup), so the "
            "deltas only check the plumbing; they say nothing about the methods."
        )
    return "\n".join(lines) + "\n"
