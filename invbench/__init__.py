"""invbench: the shared machinery of the harness (models, DDIM schedule, registry, job runner, results files).

Method code lives in the top-level packages `inversions/` and `editors/`, the benchmark reader in `pie_bench/`,
measurements in `metrics/`, tables in `reports/`.
"""

__version__ = "0.1.0"
