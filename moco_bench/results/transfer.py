"""The transfer suite's table: one row per checkpoint of ours and per published method, one column per dataset
(each dataset's headline metric: top-1, mean per-class accuracy or VOC07's 11-point mAP), and their mean over
the suite's datasets, the single number the transfer papers rank models by (Kornblith et al. 2019 average
over their datasets; Ericsson et al. 2021 compare models over the same many-shot sets). A row that lacks a
dataset has no average (its mean over what it has is shown with the count), so no partial mean passes for the
suite's."""

from __future__ import annotations

from typing import Dict

import pandas as pd

PREFIX = "transfer_"
HEADLINE = {"top1", "mean_per_class", "voc11_map"}


def suite_table(tables: Dict[str, pd.DataFrame], expected: int = 11) -> pd.DataFrame:
    """Rows ``row, method, epochs, <dataset>..., datasets, average, mean_of_present``; empty without transfer tables.
    ``expected``: the suite's dataset count (the average needs every one)."""
    parts = []
    for name, table in tables.items():
        if not name.startswith(PREFIX) or "[" in name:  # a protocol variant keeps to its own table
            continue
        rows = table[table["metric"].isin(HEADLINE)]
        parts.append(rows.assign(dataset=name[len(PREFIX):])[["row", "method", "epochs", "dataset", "value"]])
    if not parts:
        return pd.DataFrame()
    long = pd.concat(parts, ignore_index=True)
    long["epochs"] = long["epochs"].astype(str)
    wide = long.pivot_table(index=["row", "method", "epochs"], columns="dataset", values="value", aggfunc="first")
    values = wide.copy()
    wide["datasets"] = values.notna().sum(axis=1)
    wide["mean_of_present"] = values.mean(axis=1)
    wide["average"] = wide["mean_of_present"].where(wide["datasets"] == expected)
    return wide.reset_index().sort_values(["row", "method"], ascending=[False, True], kind="stable").reset_index(
        drop=True)


def numeric(table: pd.DataFrame) -> list:
    """The columns of :func:`suite_table` that hold metrics (shown to two decimals)."""
    return [c for c in table.columns if c not in ("row", "method", "epochs", "datasets")]
