"""Seeds aggregated: runs directory -> per-run metrics -> mean +/- std table and figures.

Library use (the results notebook): ``runs = load_runs(path)``, ``summary(runs)``,
``format_table(...)``, ``compare(runs, row_a, row_b)``, ``load_history(runs)``,
``load_predictions(runs, row, seed)`` and the figure functions of `plots`, each returning a
matplotlib Figure. A row is named ``experiment/stage`` or ``experiment/stage[variant]``.
"""

from abaw_lightning.report.compare import compare, format_comparison
from abaw_lightning.report.plots import (
    confusion_matrix,
    metric_distributions,
    va_density,
    validation_curves,
)
from abaw_lightning.report.runs import (
    best_seed,
    data_source,
    load_history,
    load_predictions,
    load_runs,
)
from abaw_lightning.report.tables import format_table, summary, to_csv, to_json, to_markdown

__all__ = [
    "best_seed",
    "compare",
    "confusion_matrix",
    "data_source",
    "format_comparison",
    "format_table",
    "load_history",
    "load_predictions",
    "load_runs",
    "metric_distributions",
    "summary",
    "to_csv",
    "to_json",
    "to_markdown",
    "va_density",
    "validation_curves",
]
