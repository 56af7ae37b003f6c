"""Which rows come from a model whose numbers say nothing about the methods: the random-weight models (rows' weights
say "random-init ...": model=tiny and every *_random model) and the embedded toy ("embedded toy ...": model=toy, trained
on a handful of photos). Tables keep their numbers and say so beside them; no published comparison is made with them."""

from __future__ import annotations

import pandas as pd

STAND_INS = {"random-init": "RANDOM WEIGHTS", "embedded toy": "TOY MODEL"}


def stand_in_models(rows: pd.DataFrame) -> dict[str, list[str]]:
    """{label: the models of `rows` it applies to}, for the labels that apply."""
    if "model_weights" not in rows or rows.empty:
        return {}
    weights = rows["model_weights"].astype(object).map(str)
    found = {}
    for prefix, label in STAND_INS.items():
        models = sorted(set(rows.loc[weights.str.startswith(prefix), "model"].astype(str)))
        if models:
            found[label] = models
    return found


def stand_in_notes(rows: pd.DataFrame, what: str) -> list[str]:
    """One line per label that applies: `what` (e.g. "these fronts") shows the run and the report working only."""
    reasons = {"RANDOM WEIGHTS": "random weights", "TOY MODEL": "a toy trained on a handful of photos"}
    return [
        f"- {label} ({', '.join(models)}): {reasons[label]}; {what} show the run and the report working, they say "
        "nothing about the methods"
        for label, models in stand_in_models(rows).items()
    ]
