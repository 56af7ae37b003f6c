"""The one Markdown-table writer: GitHub-flavoured pipe tables, as the job summary, aggregate.py's tables, the
published comparisons and the generated docs print them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """`| a | b |`, `|---|---|`, then one `| x | y |` line per row (cells as given, already formatted); no trailing
    newline."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
