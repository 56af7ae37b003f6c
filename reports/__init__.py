"""Reports built from result rows: tables, coverage (and, later, statistics, plots and galleries)."""

from reports.coverage import coverage, describe_coverage
from reports.tables import load_results, mean_table, to_markdown

__all__ = ["coverage", "describe_coverage", "load_results", "mean_table", "to_markdown"]
