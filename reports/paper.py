"""Tables in the layout of the PIE-Bench papers (TODInv Table 1, Tables 4–6), with bootstrap intervals and notes.

A `PaperTable` has one row per method (inversion × editor; a setup marker is added when rows differ in model,
configuration or metric setup), optionally in blocks (one per editing type or edit class), and one column per
metric at the papers' scale, each cell a mean with its paired bootstrap interval. Every rendering (CSV, Markdown,
LaTeX/booktabs) carries the notes: sample counts, failed samples, the NaN and mask policies, what the markers mean.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from invbench.columns import COLUMNS, PAPER_TABLE, Column
from invbench.markdown import markdown_table
from pie_bench import EDITING_TYPES
from reports.statistics import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Bootstrap
from reports.tables import complete_rows, differing_hyperparameters

UNEDITED_PART_METRICS = ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")


PAPER_COLUMNS = tuple(COLUMNS[key] for key in PAPER_TABLE)  # defined once in invbench/columns.py
COST_KEYS = {key for key in PAPER_TABLE if COLUMNS[key].kind == "cost"}
METHOD = ["inversion", "editor"]


@dataclass
class PaperTable:
    title: str
    block_name: str | None  # "Editing Type" for per-category tables, None for one block
    columns: tuple[Column, ...]
    cells: (
        pd.DataFrame
    )  # one row per (block, method, setup): labels, counts, and <key>, <key>_low, <key>_high, <key>_n
    notes: list[str] = field(default_factory=list)
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def has_setups(self) -> bool:
        return self.cells["setup"].nunique() > 1


def prepare(results: pd.DataFrame) -> pd.DataFrame:
    """Rows as the tables read them: unet_evals added, metrics_setup filled, and a setup letter (a, b, ...) per
    distinct model × metric setup, plus the configuration where one method ran under several (the `variant`, named
    by the hyperparameters that differ). Different methods naturally have different configurations; that alone
    is not a different setup."""
    rows = complete_rows(results)
    for total in ("unet_evals", "unet_backward_evals"):  # inversion + edit
        if {f"inversion_{total}", f"edit_{total}"} <= set(rows.columns):
            rows[total] = rows[f"inversion_{total}"] + rows[f"edit_{total}"]
    differs = differing_hyperparameters(rows)
    rows["variant"] = rows["config_hash"].map(lambda digest: differs.get(digest, ""))
    keys = rows[["model", "data", "metrics_setup", "variant"]].map(str).agg(" | ".join, axis=1)  # missing: "nan"
    letters = {key: chr(ord("a") + i) for i, key in enumerate(dict.fromkeys(keys))}
    rows["setup"] = keys.map(letters)
    return rows


def paper_table(
    rows: pd.DataFrame,
    title: str,
    columns: tuple[Column, ...] = PAPER_COLUMNS,
    block: str | None = None,
    block_order: list | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    notes: Sequence[str] = (),
) -> PaperTable:
    """Means and paired bootstrap intervals of `rows` (from `prepare`) per method, in blocks of `block` (a row
    field such as 'category') when given. Failed samples are counted and listed, never averaged."""
    absent = [c.label for c in columns if c.key not in rows.columns]
    columns = tuple(c for c in columns if c.key in rows.columns)
    blocks = [(None, rows)] if block is None else _blocks(rows, block, block_order)
    cells = []
    for block_value, part in blocks:
        ok = part[part["status"] == "ok"]
        plan = Bootstrap.plan(ok["sample_id"], resamples, confidence) if len(ok) else None
        for (inversion, editor, setup), method in part.groupby([*METHOD, "setup"], sort=False, dropna=False):
            good = method[method["status"] == "ok"].set_index("sample_id")
            cell = {
                "block": block_value,
                "inversion": inversion,
                "editor": editor,
                "setup": setup,
                "samples_ok": len(good),
                "samples_failed": int((method["status"] != "ok").sum()),
            }
            for column in columns:
                values = good[column.key].astype(float) * column.scale
                low, high = plan.interval(plan.align(values)) if plan is not None else (np.nan, np.nan)
                cell |= {
                    column.key: values.mean(),
                    f"{column.key}_low": low,
                    f"{column.key}_high": high,
                    f"{column.key}_n": int(values.notna().sum()),
                }
            cells.append(cell)
    table = PaperTable(title, None if block is None else _block_title(block), columns, pd.DataFrame(cells))
    table.failed = rows.loc[rows["status"] != "ok", [*METHOD, "setup", "sample_id", "error"]].reset_index(drop=True)
    table.notes = _notes(rows, table, resamples, confidence) + _missing_value_notes(rows, table, absent) + list(notes)
    return table


def _missing_value_notes(rows: pd.DataFrame, table: PaperTable, absent: list[str]) -> list[str]:
    """Say which columns no row has, and which methods show '-' in a column because none of their rows has a
    value there, with the reason when the rows tell it."""
    notes = [f"Not shown because no row has them: {', '.join(absent)}."] if absent else []
    lacking = []
    for (inversion, editor, setup), method in rows.groupby([*METHOD, "setup"], sort=False, dropna=False):
        good = method[method["status"] == "ok"]
        if good.empty:
            lacking.append(f"{inversion}+{editor}{_setup_mark(table, setup)}: every column (no successful sample)")
            continue
        empty = [c for c in table.columns if good[c.key].isna().all()]
        if not empty:
            continue
        if (good["metrics_setup"] == "none").all() and all(c.key not in COST_KEYS for c in empty):
            reason = "run with metrics=none"
        elif (good["model"] == "external").all() and all(c.key in COST_KEYS for c in empty):
            reason = "scored by score.py from saved outputs, which record no cost"
        else:
            reason = "undefined for its samples, see the NaN policy"
        labels = ", ".join(c.label for c in empty)
        lacking.append(f"{inversion}+{editor}{_setup_mark(table, setup)}: {labels} ({reason})")
    if lacking:
        notes.append("'-' marks values the rows lack: " + "; ".join(lacking) + ".")
    return notes


def _setup_mark(table: PaperTable, setup: str) -> str:
    return f" [{setup}]" if table.has_setups else ""


def _blocks(rows: pd.DataFrame, block: str, order: list | None) -> list[tuple[object, pd.DataFrame]]:
    # the given order first (PIE-Bench's editing types), then any other group a dataset defines, sorted
    values = list(order or [])
    values += sorted(str(value) for value in rows[block].dropna().unique() if value not in values)
    present = [value for value in values if (rows[block] == value).any()]
    return [(value, rows[rows[block] == value]) for value in present]


def _block_title(block: str) -> str:
    return {"category": "Editing Type", "edit_class": "Edit Class"}.get(block, block)


def _notes(rows: pd.DataFrame, table: PaperTable, resamples: int, confidence: float) -> list[str]:
    ok = rows[rows["status"] == "ok"]
    notes = [
        (
            f"Means over successful samples; ± is the half-width of the {confidence:.0%} paired bootstrap interval "
            f"(percentile, {resamples} resamples of the images, the same draws for every method of a block); the CSV "
            "has both ends and each cell's sample count. Best value per column in bold."
        ),
    ]
    unedited = [c for c in UNEDITED_PART_METRICS if c in ok.columns]
    nan_samples = int(ok[unedited].isna().any(axis=1).sum()) if unedited else 0
    notes.append(
        "NaN policy: the unedited-region metrics (PSNR, LPIPS, MSE, SSIM) are undefined when a sample's mask leaves "
        f"no pixel unedited ({nan_samples} sample rows here); such values are left out of their column's mean, so "
        "those columns can average fewer samples than the others (the CSV's _n columns)."
    )
    setups = set(ok["metrics_setup"]) or set(rows["metrics_setup"])
    if any(s.startswith("pie_bench/reference") for s in setups):
        notes.append(
            "Mask policy (reference_compat, as the reference evaluate.py): both images are multiplied by (1 − mask) "
            "and scored over the whole image, so masked pixels count as zero error; the 1-pixel frame of every mask "
            "counts as edited; the edited image passes the reference's JPEG quality-75 composite round trip."
        )
    if any(s.startswith("pie_bench/corrected") for s in setups):
        notes.append(
            "Mask policy (corrected): both images × (1 − mask), scored over the whole image, from the lossless PNGs "
            "(no JPEG round trip); not comparable with published numbers."
        )
    failed = table.failed
    if len(failed):
        notes.append(
            f"{len(failed)} failed sample rows are counted (samples_failed) and not in any mean: "
            + "; ".join(f"{r.inversion}+{r.editor} {r.sample_id}" for r in failed.head(10).itertuples())
            + (f"; ... ({len(failed) - 10} more, see failed.csv)" if len(failed) > 10 else "")
            + "."
        )
    described = rows.drop_duplicates("setup").set_index("setup")
    lines = [
        f"[{letter}] model={r.model}"
        + (f", data: {r.data}" if r.data != "-" else "")
        + f", metrics: {r.metrics_setup}"
        + (f", {r.variant}" if r.variant else "")
        for letter, r in described.iterrows()
    ]
    if table.has_setups:
        notes.append("Rows differ in setup; never compare across letters without reading them: " + " ".join(lines))
    else:
        notes.append("Setup: " + lines[0].removeprefix("[a] "))
    return notes


def best_rows(table: PaperTable) -> dict[str, set[int]]:
    """Column key -> positions (in table.cells) holding the best mean of their block (ties all best)."""
    best: dict[str, set[int]] = {}
    for column in table.columns:
        chosen: set[int] = set()
        for _, part in table.cells.groupby("block", dropna=False, sort=False):
            values = part[column.key]
            if values.notna().any():
                target = values.max() if column.higher_is_better else values.min()
                chosen |= {i for i, v in zip(part.index, values) if np.isclose(v, target, rtol=0, atol=1e-12)}
        best[column.key] = chosen
    return best


def to_csv(table: PaperTable) -> str:
    """Plain numbers: labels, counts, then per metric its scaled mean, interval ends and sample count."""
    frame = table.cells.copy()
    if table.block_name is None:
        frame = frame.drop(columns="block")
    else:
        frame = frame.rename(columns={"block": table.block_name.lower().replace(" ", "_")})
    if not table.has_setups:
        frame = frame.drop(columns="setup")
    return frame.to_csv(index=False, float_format="%.4f", lineterminator="\n")


def _mean_text(table: PaperTable, position: int, column: Column) -> tuple[str, str]:
    row = table.cells.loc[position]
    mean, low, high = row[column.key], row[f"{column.key}_low"], row[f"{column.key}_high"]
    if pd.isna(mean):
        return "-", ""
    spread = "" if pd.isna(low) else f"{(high - low) / 2:.{column.digits}f}"
    return f"{mean:.{column.digits}f}", spread


def _method_labels(table: PaperTable, position: int) -> list[str]:
    row = table.cells.loc[position]
    labels = [row["inversion"], row["editor"]]
    if table.has_setups:
        labels.append(f"[{row['setup']}]")
    if table.block_name is not None:
        labels.append(str(row["block"]))
    return labels


def _label_headers(table: PaperTable) -> list[str]:
    return (
        ["Inversion", "Editing"]
        + (["Setup"] if table.has_setups else [])
        + ([table.block_name] if table.block_name else [])
    )


def to_markdown(table: PaperTable) -> str:
    best = best_rows(table)
    arrows = {True: "↑", False: "↓"}
    header = _label_headers(table) + [f"{c.label} {arrows[c.higher_is_better]}" for c in table.columns] + ["N"]
    rows = []
    for position in table.cells.index:
        cells = list(_method_labels(table, position))
        for column in table.columns:
            mean, spread = _mean_text(table, position, column)
            mean = f"**{mean}**" if position in best[column.key] else mean
            cells.append(f"{mean} ± {spread}" if spread else mean)
        row = table.cells.loc[position]
        failed = f" ({row['samples_failed']} failed)" if row["samples_failed"] else ""
        cells.append(f"{row['samples_ok']}{failed}")
        rows.append(cells)
    lines = [f"**{table.title}**", "", markdown_table(header, rows), "", *(f"- {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


# Every character LaTeX treats specially, and the non-ASCII ones our own texts use, as text-mode LaTeX.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    "_": r"\_",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    "×": r"$\times$",
    "−": "$-$",
    "±": r"$\pm$",
    "→": r"$\rightarrow$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "²": r"$^{2}$",
    "³": r"$^{3}$",
    "⁴": r"$^{4}$",
}


def latex_escape(text: str) -> str:
    """`text` as LaTeX that typesets it verbatim, in one pass (so no escape is escaped again). Other non-ASCII
    characters (a sample id or an error in another script) become their closest ASCII, or '?', so that the table
    compiles with plain pdflatex."""
    return "".join(LATEX_ESCAPES.get(character, _ascii(character)) for character in text)


def _ascii(character: str) -> str:
    if character.isascii():
        return character
    plain = unicodedata.normalize("NFKD", character).encode("ascii", "ignore").decode()
    return plain or "?"


def to_latex(table: PaperTable) -> str:
    """A booktabs table (\\usepackage{booktabs}) with the papers' grouped header; notes follow as a footnotesize
    paragraph inside the table environment."""
    best = best_rows(table)
    labels = _label_headers(table)
    arrows = {True: r"$\uparrow$", False: r"$\downarrow$"}
    groups: list[tuple[str, int]] = []
    for column in table.columns:
        if groups and groups[-1][0] == column.group:
            groups[-1] = (column.group, groups[-1][1] + 1)
        else:
            groups.append((column.group, 1))
    first = len(labels) + 1
    top, rules = [""] * len(labels), []
    for name, span in groups:
        top.append(rf"\multicolumn{{{span}}}{{c}}{{{name}}}" if span > 1 else name)
        rules.append(rf"\cmidrule(lr){{{first}-{first + span - 1}}}")
        first += span
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        r"\resizebox{\linewidth}{!}{%",
        r"\begin{tabular}{" + "l" * len(labels) + "r" * (len(table.columns) + 1) + "}",
        r"\toprule",
        " & ".join(top) + r" & \\",
        " ".join(rules),
        " & ".join(labels + [f"{c.latex} {arrows[c.higher_is_better]}" for c in table.columns] + ["N"]) + r" \\",
        r"\midrule",
    ]
    previous_block = object()
    for position in table.cells.index:
        row = table.cells.loc[position]
        if table.block_name is not None and row["block"] != previous_block and position != table.cells.index[0]:
            lines.append(r"\midrule")
        previous_block = row["block"]
        cells = [latex_escape(label) for label in _method_labels(table, position)]
        for column in table.columns:
            mean, spread = _mean_text(table, position, column)
            mean = rf"\textbf{{{mean}}}" if position in best[column.key] else mean
            cells.append(rf"{mean}{{\scriptsize$\pm${spread}}}" if spread else mean)
        cells.append(str(row["samples_ok"]))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip\footnotesize"]
    lines += [latex_escape(note) + r"\par" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def category_order() -> list[str]:
    return [name for _, name in EDITING_TYPES.values()]
