"""Everything aggregate.py writes from a set of result rows: paper tables, comparisons, figures, gallery."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from invbench.errors import ConfigError
from invbench.markdown import markdown_table
from reports.frontier import (
    REFERENCE,
    Frontiers,
    frontier_latex,
    frontier_markdown,
    frontier_points,
    frontier_rows,
    frontiers,
)
from reports.paper import (
    PAPER_COLUMNS,
    PaperTable,
    category_order,
    paper_table,
    prepare,
    to_csv,
    to_latex,
    to_markdown,
)
from reports.statistics import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, paired_difference

EDIT_CLASSES = ("appearance", "structure", "global")  # the order of TODInv's Tables 4, 5, 6


@dataclass
class ReportOptions:
    resamples: int = DEFAULT_RESAMPLES
    confidence: float = DEFAULT_CONFIDENCE
    published: str | None = None
    compare: list[tuple[str, str]] = field(default_factory=list)
    figures: bool = True
    gallery: bool = True
    notes: list[str] = field(default_factory=list)  # about the rows themselves, written under every table
    frontier_reference: tuple[float, float] | None = None  # None: reports.frontier.REFERENCE


@dataclass
class Report:
    main: PaperTable
    tables: dict[str, PaperTable]  # file stem -> table
    files: list[Path]
    frontiers: Frontiers | None = None  # when some method ran under several settings (a frontier sweep)


def write_table(table: PaperTable, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.tex"]
    for path, render in zip(paths, (to_csv, to_markdown, to_latex)):
        path.write_text(render(table), encoding="utf-8")
    return paths


def build_reports(results: pd.DataFrame, out: Path, options: ReportOptions) -> Report:
    rows = prepare(results)
    out.mkdir(parents=True, exist_ok=True)
    stats = {"resamples": options.resamples, "confidence": options.confidence, "notes": options.notes}
    tables = {"table1": paper_table(rows, "PIE-Bench: inversion × editing method", **stats)}
    tables["per_category"] = paper_table(
        rows, "PIE-Bench per editing type", block="category", block_order=category_order(), **stats
    )
    for edit_class in EDIT_CLASSES:
        part = rows[rows["edit_class"] == edit_class]
        if len(part):
            # TODInv leaves structure distance out of the structure-edit table: a structure edit should change it.
            columns = tuple(c for c in PAPER_COLUMNS if edit_class != "structure" or c.key != "structure_distance")
            tables[f"class_{edit_class}"] = paper_table(part, f"PIE-Bench, {edit_class} edits", columns, **stats)
    files = [path for stem, table in tables.items() for path in write_table(table, out, stem)]
    files.append(out / "failed.csv")
    tables["table1"].failed.to_csv(files[-1], index=False)

    if options.published:
        files += _published(tables["table1"], rows, options.published, out)
    for first, second in options.compare:
        files += _comparison(rows, first, second, out, options)
    if options.figures:
        from reports.plots import time_plot, tradeoff_plot

        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        files += tradeoff_plot(tables["table1"], figures) + time_plot(tables["table1"], figures)
    if options.gallery:
        from reports.gallery import write_gallery

        files.append(write_gallery(rows, out / "gallery" / "index.html"))
    found = frontiers(rows, options.resamples, options.confidence, reference=options.frontier_reference or REFERENCE)
    if found is not None:
        files += write_frontiers(found, rows, out, options)
    return Report(tables["table1"], tables, files, found)


def write_frontiers(found: Frontiers, rows: pd.DataFrame, out: Path, options: ReportOptions) -> list[Path]:
    """frontier.{csv,md,tex} (one row per method), frontier_points.csv (every setting), the figure and the strips."""
    paths = [out / "frontier.csv", out / "frontier_points.csv", out / "frontier.md", out / "frontier.tex"]
    frontier_rows(found).to_csv(paths[0], index=False, float_format="%.4f")
    frontier_points(found).to_csv(paths[1], index=False, float_format="%.4f")
    paths[2].write_text(frontier_markdown(found), encoding="utf-8")
    paths[3].write_text(frontier_latex(found), encoding="utf-8")
    if options.figures:
        from reports.plots import frontier_plot

        (out / "figures").mkdir(exist_ok=True)
        paths += frontier_plot(found, out / "figures")
    if options.gallery:
        from reports.gallery import write_frontier_strips

        paths.append(write_frontier_strips(rows, found, out / "gallery" / "frontier.html"))
    return paths


def _published(table: PaperTable, rows: pd.DataFrame, name: str, out: Path) -> list[Path]:
    from reports.caveats import stand_in_models
    from reports.published import compare_with_published, load_published, our_setups, published_markdown

    published, source = load_published(name)
    comparison = compare_with_published(table, published, our_setups(rows))
    setups = "; ".join(sorted({f"model={m}, metrics: {s}" for m, s in zip(rows["model"], rows["metrics_setup"])}))
    # a model with random weights (tiny and every *_random model), the trained toy, or tiny metric backbones make
    # numbers that no published table can be compared with
    real = not (stand_in_models(rows) or rows["metrics_setup"].str.contains("tiny").any())
    paths = [out / "published.csv", out / "published.md"]
    comparison.to_csv(paths[0], index=False, float_format="%.4f")
    paths[1].write_text(published_markdown(comparison, source, setups, real), encoding="utf-8")
    return paths


def _method_rows(rows: pd.DataFrame, label: str) -> pd.DataFrame:
    """Rows of one method named 'inversion+editor' (add '[b]' to pick a setup letter when there are several)."""
    name, _, setup = label.partition("[")
    inversion, _, editor = name.partition("+")
    chosen = rows[(rows["inversion"] == inversion) & (rows["editor"] == editor) & (rows["status"] == "ok")]
    if setup:
        chosen = chosen[chosen["setup"] == setup.rstrip("]")]
    if chosen.empty:
        available = sorted({f"{i}+{e}" for i, e in zip(rows["inversion"], rows["editor"])})
        raise ConfigError(f"--compare {label}: no successful rows of that method; available: {available}")
    if chosen["setup"].nunique() > 1:
        raise ConfigError(
            f"--compare {label}: it ran in setups {sorted(chosen['setup'].unique())}; add one, e.g. {name}[a]"
        )
    return chosen.drop_duplicates("sample_id", keep="last").set_index("sample_id")


def _comparison(rows: pd.DataFrame, first: str, second: str, out: Path, options: ReportOptions) -> list[Path]:
    a, b = _method_rows(rows, first), _method_rows(rows, second)
    results = [
        paired_difference(a[c.key] * c.scale, b[c.key] * c.scale, c.key, options.resamples, options.confidence)
        for c in PAPER_COLUMNS
        if c.key in a.columns and c.key in b.columns
    ]
    frame = pd.DataFrame([vars(r) | {"interval_excludes_zero": r.excludes_zero} for r in results])
    stem = f"compare_{first}_vs_{second}".replace("+", "-").replace("[", "").replace("]", "")
    direction = {c.key: c.higher_is_better for c in PAPER_COLUMNS}
    header = ["metric", "n", first, second, "Δ", f"{options.confidence:.0%} interval of Δ", f"{first} higher on"]
    rows = []
    for r in results:
        verdict = ""
        if r.excludes_zero:
            better = (r.difference > 0) == direction[r.metric]
            verdict = f" ({first if better else second} better)"
        rows.append([r.metric, r.samples, f"{r.mean_a:.2f}", f"{r.mean_b:.2f}", f"{r.difference:+.2f}{verdict}",
                     f"[{r.low:+.2f}, {r.high:+.2f}]", f"{r.a_higher:.0%}"])  # fmt: skip
    lines = [
        f"**{first} vs {second}** on the samples both ran successfully (paired; Δ = {first} − {second})",
        "",
        markdown_table(header, rows),
    ]
    lines += [
        "",
        (
            "- Metrics at the papers' scale. A difference whose interval contains 0 is within the sampling noise of "
            "these images."
        ),
    ]
    paths = [out / f"{stem}.csv", out / f"{stem}.md"]
    frame.to_csv(paths[0], index=False, float_format="%.4f")
    paths[1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths
