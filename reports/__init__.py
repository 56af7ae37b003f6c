"""Reports built from result rows: tables (and, later, statistics, plots and galleries)."""

from reports.tables import load_results, mean_table, to_markdown

__all__ = ["load_results", "mean_table", "to_markdown"]
