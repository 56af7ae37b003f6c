"""Published numbers to hold our tables against (`aggregate.py --published todinv_table1`; `--published` alone lists
the tables).

Each table of reports/published/ is one table of one paper, as a CSV whose `#` lines name the paper, its version, the
table and the exact source read (reports/published/README.md has the full provenance and how confident each reading
is). Papers disagree with each other, so tables are never merged. Every table uses our registry's names
(`inversion`, `editor`; the printed label is in `paper_method`), our metric scales, and says per row which model
(`model`, a conf/model name) and step count (`steps`) it ran with, and how well our configuration matches the
paper's setting (`registry_match`: yes, partial, no). A comparison shows those beside our model and step count and
names every difference of model family, model or steps.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from invbench.errors import ConfigError
from reports.paper import PaperTable
from reports.tables import to_markdown

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
CONF = Path(__file__).resolve().parent.parent / "conf"
MODEL_CONF = CONF / "model"
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
DESCRIBING = ("paper_method", "model", "steps", "registry_match", "note")  # every table has these, "-" if unknown
REGISTRY_MATCHES = ("yes", "partial", "no")


def table_names() -> list[str]:
    return sorted(path.stem for path in PUBLISHED_DIR.glob("*.csv"))


def _path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = PUBLISHED_DIR / f"{name_or_path}.csv"
    if not path.is_file():
        raise ConfigError(
            f"--published {name_or_path}: no such file; shipped tables: {table_names()}, or give a CSV path "
            "(`aggregate.py --published` lists them)"
        )
    return path


def load_published(name_or_path: str) -> tuple[pd.DataFrame, str]:
    """(rows with our column names, the source text) of a shipped table's name or a CSV path."""
    path = _path(name_or_path)
    source = " ".join(
        line.removeprefix("#").strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    )
    frame = pd.read_csv(path, comment="#", na_values=["-"], keep_default_na=False, dtype={"steps": str})
    missing = {"inversion", "editor", *PUBLISHED_COLUMNS} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: columns {sorted(missing)} are missing; expected {list(PUBLISHED_COLUMNS)}")
    for column in DESCRIBING:  # a user's own CSV may have only the core columns
        frame[column] = frame[column].fillna("-").astype(str) if column in frame else "-"
    bad = frame[~frame["registry_match"].isin([*REGISTRY_MATCHES, "-"])]
    if len(bad):
        raise ConfigError(
            f"{path}: row {bad.index[0] + 1}, registry_match={bad['registry_match'].iloc[0]!r}: expected one of "
            f"{REGISTRY_MATCHES}"
        )
    frame["inversion_config"] = frame["inversion"].astype(str).str.lower()
    frame["editor_config"] = frame["editor"].astype(str).str.lower()
    # rows record registry names (a variant's too): match on those, and compare settings with the configuration
    frame["inversion"] = frame["inversion_config"].map(lambda name: registry_name("inversion", name))
    frame["editor"] = frame["editor_config"].map(lambda name: registry_name("editor", name))
    return frame.rename(columns=PUBLISHED_COLUMNS), source


def paper_of(source: str) -> str:
    """The paper and table a table's `# Paper:` line names."""
    return source.removeprefix("Paper:").split(" Source:")[0].strip()


def list_published() -> pd.DataFrame:
    """One row per shipped table: its name, paper, models and number of rows."""
    listed = []
    for name in table_names():
        frame, source = load_published(name)
        models = sorted(set(frame["model"]) - {"-"})
        listed.append({"table": name, "paper": paper_of(source), "models": ", ".join(models), "rows": len(frame)})
    return pd.DataFrame(listed)


@cache
def config_node(axis: str, name: str) -> dict:
    """conf/<axis>/<name>.yaml with the bases it names in `defaults` merged under it (as Hydra composes a variant)."""
    path = CONF / axis / f"{name}.yaml"
    if not path.is_file():
        return {}
    node = yaml.safe_load(path.read_text()) or {}
    merged: dict = {}
    for base in node.get("defaults", []):
        if isinstance(base, str) and base != "_self_":
            merged |= config_node(axis, base)
    return merged | {key: value for key, value in node.items() if key != "defaults"}


def registry_name(axis: str, config: str) -> str:
    """The registry name a configuration runs (a variant such as fireflow_edit runs rf_edit with its settings)."""
    return config_node(axis, config).get("name", config)


def setting_differences(hparams: dict, inversion_config: str, editor_config: str) -> list[str]:
    """Where our run's method settings differ from the configurations a published row maps to."""
    said = []
    for axis, config in (("inversion", inversion_config), ("editor", editor_config)):
        ours = (hparams or {}).get(axis) or {}
        for key, value in config_node(axis, config).items():
            if key in ("name", "num_steps") or (isinstance(value, str) and value.startswith("${")):
                continue  # steps are compared on their own; interpolations are run-level settings
            if key in ours and ours[key] != value:
                said.append(f"{axis}.{key}={ours[key]} ({config}: {value})")
    return said


@cache
def model_family(model: str) -> str | None:
    """The family (sd, sdxl, sd3, flux) of a conf/model name, or None for a model the registry does not have."""
    path = MODEL_CONF / f"{model}.yaml"
    return yaml.safe_load(path.read_text()).get("family") if path.is_file() else None


def _parsed(hparams) -> dict:
    if isinstance(hparams, str):  # rows written as text
        try:
            hparams = ast.literal_eval(hparams)
        except (ValueError, SyntaxError):
            return {}
    return hparams if isinstance(hparams, dict) else {}


def _steps_of(hparams: dict) -> str:
    steps = (hparams.get("inversion") or {}).get("num_steps", hparams.get("num_steps"))
    return "-" if steps is None else str(steps)


def our_setups(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (inversion, editor, setup) of prepared rows: our model, step count (values joined if they vary) and the
    method settings (`hparams` of its first row)."""
    frame = rows[["inversion", "editor", "setup", "model"]].copy()
    hparams = rows["hparams"].map(_parsed) if "hparams" in rows else pd.Series([{}] * len(rows), index=rows.index)
    frame["steps"], frame["hparams"] = hparams.map(_steps_of), hparams
    return (
        frame.groupby(["inversion", "editor", "setup"], sort=False)
        .agg(our_model=("model", lambda v: "/".join(sorted(set(map(str, v))))),
             our_steps=("steps", lambda v: "/".join(sorted(set(v)))), our_hparams=("hparams", "first"))
        .reset_index()
    )  # fmt: skip


def differences(our_model: str, our_steps: str, model: str, steps: str) -> str:
    """What separates a published row's setting from ours, in words ('' when nothing does)."""
    said = []
    ours, theirs = model_family(our_model), model_family(model) if model != "-" else None
    if model == "-":
        said.append("published model not stated")
    elif theirs is None or theirs != ours:
        said.append(f"OTHER MODEL FAMILY: published {model} ({theirs or 'not in the registry'}), ours {our_model} "
                     f"({ours})")  # fmt: skip
    elif model != our_model:
        said.append(f"other model: published {model}, ours {our_model}")
    if steps == "-":
        said.append("published steps not stated")
    elif steps != our_steps:
        said.append(f"OTHER STEP COUNT: published {steps}, ours {our_steps}")
    return "; ".join(said)


def compare_with_published(
    table: PaperTable, published: pd.DataFrame, ours: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (our method and setup, published row, metric) that both have: our mean and interval, the published
    value, the difference (ours − published), whether the published value lies inside our interval, the published
    row's label, model and steps beside ours (`ours`: `our_setups`), and what separates the two settings."""
    keys = [c.key for c in table.columns if c.key in published.columns]
    theirs_only = published.rename(columns={"model": "published_model", "steps": "published_steps"})
    theirs_only["published_row"] = range(1, len(published) + 1)  # a table may print one label twice (Table 6)
    merged = table.cells.merge(theirs_only, on=["inversion", "editor"], suffixes=("", "_published"))
    if ours is not None:
        merged = merged.merge(ours, on=["inversion", "editor", "setup"], how="left")
    rows = []
    for row in merged.itertuples(index=False):
        row = row._asdict()
        our_model, our_steps = str(row.get("our_model", "-")), str(row.get("our_steps", "-"))
        setting = {
            "published_row": row["published_row"],
            "paper_method": row["paper_method"],
            "published_model": row["published_model"],
            "published_steps": row["published_steps"],
            "our_model": our_model,
            "our_steps": our_steps,
            "registry_match": row["registry_match"],
            "differs": "; ".join(
                filter(None, [differences(our_model, our_steps, row["published_model"], row["published_steps"]),
                              *setting_differences(row.get("our_hparams"), row["inversion_config"],
                                                   row["editor_config"])])
            ) if ours is not None else "our model and steps not given",
        }  # fmt: skip
        for key in keys:
            ours_value, theirs = row[key], row[f"{key}_published"]
            low, high = row[f"{key}_low"], row[f"{key}_high"]
            rows.append(
                {
                    "inversion": row["inversion"],
                    "editor": row["editor"],
                    "setup": row["setup"],
                    **setting,
                    "metric": key,
                    "ours": ours_value,
                    "ours_low": low,
                    "ours_high": high,
                    "published": theirs,
                    "delta": ours_value - theirs,
                    "published_inside_our_interval": bool(low <= theirs <= high) if not np.isnan(theirs) else None,
                }
            )
    return pd.DataFrame(rows)


def published_markdown(comparison: pd.DataFrame, source: str, setups: str, real_setup: bool) -> str:
    """Wide Markdown: per our method and published row, its model and steps beside ours, each metric as
    'ours / published (Δ)', and what separates the settings."""
    lines = [f"**Ours vs published** ({source})", ""]
    if comparison.empty:
        return "\n".join(lines + ["No method of these runs appears in the published table."]) + "\n"
    metrics = list(dict.fromkeys(comparison["metric"]))
    wide = []
    group = ["inversion", "editor", "setup", "published_row", "paper_method", "published_model", "published_steps"]
    for (inversion, editor, _, _, label, model, steps), part in comparison.groupby(group, sort=False):
        by_metric, first = part.set_index("metric"), part.iloc[0]
        line = {"Inversion": inversion, "Editing": editor, "Published row": label.replace("|", "\\|"),
                "Model (ours / published)": f"{first['our_model']} / {model}",
                "Steps (ours / published)": f"{first['our_steps']} / {steps}"}  # fmt: skip
        for metric in metrics:
            r = by_metric.loc[metric] if metric in by_metric.index else None
            if r is None or np.isnan(r["published"]):
                line[metric] = "" if r is None else f"{r['ours']:.2f} / -"
            else:
                line[metric] = f"{r['ours']:.2f} / {r['published']:.2f} ({r['delta']:+.2f})"
        line["Differs"] = first["differs"] or "same model and steps"
        wide.append(line)
    lines.append(to_markdown(pd.DataFrame(wide)))
    lines += [
        "",
        (f"- Our setup: {setups}. Δ = ours − published; the CSV says whether each published value lies inside "
         "our interval."),
    ]  # fmt: skip
    if (comparison["differs"] != "").any():
        lines.append(
            "- Rows whose 'Differs' names another model family, model or step count compare settings the paper did "
            "not run: read their deltas as such."
        )
    if not real_setup:
        lines.append(
            "- WARNING: these rows did not run on real weights with real metric backbones (see the setup), so the "
            "deltas only check the plumbing; they say nothing about the methods."
        )
    return "\n".join(lines) + "\n"


def published_values_markdown() -> str:
    """Every published value we hold, per method: one line per (table, published row), and where tables print
    different values for the same method. docs/published_values.md is this text (a test keeps it so)."""
    frames = []
    for name in table_names():
        frame, source = load_published(name)
        decimals = printed_decimals(name).add_suffix("_decimals")
        frames.append(pd.concat([frame, decimals], axis=1).assign(table=name, paper=paper_of(source)))
    every = pd.concat(frames, ignore_index=True)
    metrics = list(PUBLISHED_COLUMNS.values())
    labels = dict(zip(PUBLISHED_COLUMNS.values(), PUBLISHED_COLUMNS.keys(), strict=True))
    lines = [
        "# Published PIE-Bench values, per method",
        "",
        "Generated from reports/published/*.csv by `python -m reports.published --docs docs/published_values.md`",
        "(a test fails when this page and the tables differ). Scales as PIE-Bench tables print them: structure distance,",
        "LPIPS ×10³, MSE ×10⁴, SSIM ×10², CLIP ×100; `-` = not reported. Compare a run with one table at a time:",
        "`aggregate.py <runs> --published <table>`. Provenance of each table: reports/published/README.md.",
        "",
    ]
    for (inversion, editor), part in every.groupby(["inversion_config", "editor_config"], sort=True):
        shown = part[["table", "paper_method", "model", "steps", "registry_match", *metrics]].rename(
            columns={"paper_method": "published row", "registry_match": "match", **labels}
        )
        shown["published row"] = shown["published row"].str.replace("|", "\\|")  # a Markdown cell
        lines += [f"## {inversion} + {editor}", "", to_markdown(shown), ""]
        lines += [f"- {text}" for text in disagreements(part, metrics, labels)]
        lines += [""] if lines[-1] else []
    return "\n".join(lines)


def printed_decimals(name: str) -> pd.DataFrame:
    """Per row and core column of a shipped table, how many decimals it prints (a value shifted from a coarser
    printing, as FireFlow's structure distance, has fewer)."""
    text = pd.read_csv(_path(name), comment="#", dtype=str, keep_default_na=False)
    decimals = {column: text[column].map(lambda v: len(v.partition(".")[2]) if v != "-" else 9)
                for column in PUBLISHED_COLUMNS}  # fmt: skip
    return pd.DataFrame(decimals).rename(columns=PUBLISHED_COLUMNS)


def disagreements(part: pd.DataFrame, metrics: list[str], labels: dict[str, str]) -> list[str]:
    """Where tables print different values for the same method at the paper's setting (registry_match yes), beyond
    the rounding of the coarser printing."""
    said = []
    same_method = part[part["registry_match"] == "yes"]
    if same_method["table"].nunique() < 2:
        return said
    for metric in metrics:
        known = same_method.dropna(subset=[metric])
        if known.empty:
            continue
        decimals = int(known[f"{metric}_decimals"].min())
        rounded = known[metric].round(decimals)
        if rounded.nunique() > 1:
            each = "; ".join(
                f"{value:.{decimals}f} in {', '.join(f'{t} ({m}, {s} steps)' for t, m, s in group)}"
                for value, group in _grouped(rounded, known)
            )
            said.append(f"The tables disagree on {labels[metric]}: {each}.")
    return said


def _grouped(rounded: pd.Series, rows: pd.DataFrame) -> list[tuple[float, list[tuple[str, str, str]]]]:
    groups: dict[float, list[tuple[str, str, str]]] = {}
    for value, (_, row) in zip(rounded, rows.iterrows(), strict=True):
        groups.setdefault(value, []).append((row["table"], row["model"], row["steps"]))
    return list(groups.items())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="List the shipped published tables, or write the per-method page.")
    parser.add_argument("--docs", type=Path, help="write the per-method page of every published value here")
    args = parser.parse_args(argv)
    if args.docs:
        args.docs.write_text(published_values_markdown(), encoding="utf-8")
    else:
        print(to_markdown(list_published()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
