"""Build the paper tables, comparisons, figures and gallery from one or more run folders.

    python aggregate.py multirun/2026-11-22_10-00-00 outputs/2026-11-22_11-00-00_ddim+direct --out tables
    python aggregate.py multirun/... --published todinv_table1 --compare todinv+p2p nti+p2p
    python aggregate.py --published                # the published tables: paper, models, rows

Reads every results.jsonl under the given folders (job folders, sweep folders or results files). Writes, in --out:
table1 (TODInv Table 1 layout), per_category and class_{appearance,structure,global} (Tables 4-6) as CSV, Markdown
and LaTeX, each cell a mean with its paired bootstrap interval and best values in bold; mean_by_method (every
column); failed.csv; coverage.csv (works on a sweep that is still running: which jobs and samples are missing, and
the command that runs just those); figures/ (trade-off and time plots, PNG + PDF); gallery/index.html; and, on
request, published.{csv,md} and compare_<a>_vs_<b>.{csv,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LIST_PUBLISHED = "list"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, sweep folders or results.jsonl files")
    parser.add_argument("--out", type=Path, default=Path("tables"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--published",
        metavar="NAME_OR_CSV",
        nargs="?",
        const=LIST_PUBLISHED,
        help="compare with published numbers: a table shipped in reports/published/ (todinv_table1) or a CSV path; "
        "alone, list the shipped tables",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="paired comparison of two methods on their shared samples, e.g. --compare todinv+p2p nti+p2p "
        "(repeatable; add [b] to pick a setup letter)",
    )
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default: %(default)s)")
    parser.add_argument(
        "--frontier-reference",
        type=lambda text: tuple(float(part) for part in text.split(",")),
        default=None,
        metavar="PSNR,CLIP",
        help="the hypervolume's reference point of frontier tables (default: 10,15; docs/frontiers.md)",
    )
    parser.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    parser.add_argument("--no-gallery", action="store_true", help="skip the HTML gallery")
    parser.add_argument("--wandb-project", help="also log the tables, figures and coverage to this wandb project")
    parser.add_argument(
        "--wandb-mode", default="online", choices=["online", "offline", "disabled"], help="(default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.runs and args.published != LIST_PUBLISHED:
        parser.error("give the run folders to aggregate (or --published alone to list the published tables)")
    return args


def add_failed_jobs(path: Path, jobs) -> None:
    """Append to failed.csv (the failed samples) the jobs that ended in failure, with their reason and logs: a job
    that failed before its first sample has no sample row to show it."""
    import pandas as pd

    failed = jobs[jobs["job_state"] == "ended-failed"]
    samples = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["sample_id", "error"])
    job_rows = failed[["job_id", "overrides", "folder", "stdout", "stderr"]].assign(
        sample_id="", error="job ended: " + failed["reason"].fillna("no reason recorded")
    )
    pd.concat([samples, job_rows], ignore_index=True).to_csv(path, index=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.published == LIST_PUBLISHED:
        from reports.published import list_published
        from reports.tables import to_markdown as markdown

        print(markdown(list_published()))
        print("\nCompare runs with one: aggregate.py <runs> --published <table>; every value per method: "
              "docs/published_values.md")  # fmt: skip
        return 0

    from invbench.errors import InvbenchError
    from reports import coverage, describe_coverage, load_results, mean_table, to_markdown
    from reports.build import ReportOptions, build_reports
    from reports.paper import to_markdown as paper_markdown
    from reports.tables import deduplicate

    try:
        results = load_results(args.runs)
    except FileNotFoundError as error:
        print(f"aggregate.py: {error}", file=sys.stderr)
        return 2
    jobs = coverage(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs.to_csv(args.out / "coverage.csv", index=False)
    unreadable = results.attrs.get("unreadable_rows", [])
    if unreadable:
        (args.out / "unreadable_rows.txt").write_text("\n".join(unreadable) + "\n", encoding="utf-8")
        print(
            f"skipped {len(unreadable)} unreadable line(s) of results files (damaged, or a field of the wrong type "
            "or out of its range; not counted anywhere, "
            f"listed in {args.out / 'unreadable_rows.txt'}):\n  " + "\n  ".join(unreadable[:10]),
            file=sys.stderr,
        )
    if results.empty:
        add_failed_jobs(args.out / "failed.csv", jobs)
        print(f"aggregate.py: no result rows under {', '.join(map(str, args.runs))}", file=sys.stderr)
        print(describe_coverage(jobs, args.runs), file=sys.stderr)
        return 1

    read = len(results)
    results, notes = deduplicate(results)
    table = mean_table(results)
    table.to_csv(args.out / "mean_by_method.csv", index=False)
    (args.out / "mean_by_method.md").write_text(
        to_markdown(table) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n", encoding="utf-8"
    )
    options = ReportOptions(
        notes=notes,
        resamples=args.resamples,
        confidence=args.confidence,
        published=args.published,
        compare=[tuple(pair) for pair in args.compare],
        figures=not args.no_figures,
        frontier_reference=args.frontier_reference,
        gallery=not args.no_gallery,
    )
    try:
        report = build_reports(results, args.out, options)
    except InvbenchError as error:
        print(f"aggregate.py: {error}", file=sys.stderr)
        return 2
    add_failed_jobs(args.out / "failed.csv", jobs)
    print(paper_markdown(report.main))
    if report.frontiers is not None:
        from reports.frontier import frontier_markdown

        print(frontier_markdown(report.frontiers))
    print(
        f"wrote {len(report.files) + 3} files to {args.out} "
        f"({read} rows from {results['run_dir'].nunique()} job folders"
        + (f", {read - len(results)} of them repeats counted once" if read > len(results) else "")
        + ")"
    )
    print(describe_coverage(jobs, args.runs))
    if args.wandb_project:
        from orchestration.loggers import push_report

        print(push_report(report, jobs, args.out, args.wandb_project, args.wandb_mode))
    return 0


def entry() -> None:
    """The `invbench-aggregate` console script: the same as `python aggregate.py`."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
