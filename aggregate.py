"""Build tables from one or more run folders.

    python aggregate.py multirun/2026-11-22_10-00-00 outputs/2026-11-22_11-00-00_ddim+direct --out tables

Reads every results.jsonl under the given folders (job folders, sweep folders or results files) and writes the mean
per inversion × editor × model × configuration as CSV and Markdown. Works on a sweep that is still running: it merges
the jobs that have delivered, and coverage.csv (and the terminal) say which jobs and samples are still missing, with
the command that runs just those.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, sweep folders or results.jsonl files")
    parser.add_argument("--out", type=Path, default=Path("tables"), help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    from reports import coverage, describe_coverage, load_results, mean_table, to_markdown

    try:
        results = load_results(args.runs)
    except FileNotFoundError as error:
        print(f"aggregate.py: {error}", file=sys.stderr)
        return 2
    jobs = coverage(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs.to_csv(args.out / "coverage.csv", index=False)
    if results.empty:
        print(f"aggregate.py: no result rows under {', '.join(map(str, args.runs))}", file=sys.stderr)
        print(describe_coverage(jobs, args.runs), file=sys.stderr)
        return 1
    table = mean_table(results)
    table.to_csv(args.out / "mean_by_method.csv", index=False)
    markdown = to_markdown(table)
    (args.out / "mean_by_method.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)
    print(
        f"\nwrote {args.out / 'mean_by_method.csv'} and {args.out / 'mean_by_method.md'} "
        f"({len(results)} rows from {results['run_dir'].nunique()} job folders)"
    )
    print(describe_coverage(jobs, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
