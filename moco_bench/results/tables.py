"""Compile result records into one table per benchmark, our rows beside the published ones.

Every row carries its protocol, dataset and layer, so no number stands without what produced it. The published
row a result is held against (its reference) is chosen by the checkpoint's recipe (method, epochs, arch and
pretraining data, as the checkpoint records them, or ``reference`` given by hand) among the rows of the same
benchmark, the same published protocol (never a row of another protocol), metric and layer. A delta is given
only for a comparable result (its config is the shipped protocol: moco_bench/comparability.py), and where the
source states a spread, whether the delta lies within it. A protocol variant (a shortened run, the fast
head-on-cached-features linear evaluation) gets a table of its own, so its numbers never mix with the protocol's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import pandas as pd

from moco_bench.results.published import layer_of, published_dataset

COLUMNS = ["row", "method", "epochs", "arch", "dataset", "protocol", "layer", "metric", "value", "reference",
           "reference_value", "delta", "spread", "within_spread", "source", "note", "comparable", "comparability",
           "checkpoint", "file"]
# Metrics a summary leaves to the per-benchmark tables: spreads over seeds, last-epoch values, top-5.
NOT_HEADLINE = r"(?:_std|_min|_max|_last)$|top5"
Reference = Optional[Tuple[str, str]]  # (method, epochs) named by hand, e.g. ("MoCo v1", "200")


def parse_reference(text: str | None) -> Reference:
    """``"MoCo v1 200"`` -> ``("MoCo v1", "200")``: the method, then the pretraining epochs."""
    if not text:
        return None
    method, _, epochs = text.strip().rpartition(" ")
    if not method or not epochs.isdigit():
        raise ValueError(f"reference {text!r}: expected '<method> <epochs>', e.g. 'MoCo v1 200'")
    return method, epochs


def natural(text: pd.Series) -> pd.Series:
    """A sort key that puts k2 before k10 (and feature2 before feature10)."""
    return text.str.replace(r"\d+", lambda m: m.group(0).zfill(6), regex=True)


def labels(results: pd.DataFrame) -> pd.Series:
    """Each row's checkpoint name in tables and plots: its recorded label (``--label``, or the default), with 8 hex
    digits of its hash where two checkpoints share one, so that no two checkpoints ever merge into one column."""
    if results.empty:
        return pd.Series([], dtype=object)
    label = results["label"].astype(str)
    ids = results["checkpoint"].astype(str) + "\0" + results["sha256"].astype(str)
    shared = ids.groupby(label).transform("nunique") > 1
    return label.where(~shared, label + " #" + results["sha256"].astype(str).str[:8])


def ours(results: pd.DataFrame) -> pd.DataFrame:
    """Our finished rows, the newest record winning where one evaluation of a checkpoint has several."""
    ok = results[results["status"] == "ok"].copy() if not results.empty else results
    if ok.empty:
        return pd.DataFrame(columns=COLUMNS + ["benchmark", "table"])
    ok["method"] = labels(ok)
    records = ok.drop_duplicates(["file"])[["file", "method", "evaluation", "finished"]].sort_values("finished")
    counts = records.groupby(["method", "evaluation"])["file"].transform("count")
    newest = records.groupby(["method", "evaluation"])["file"].transform("last")
    keep = set(records.loc[records["file"] == newest, "file"])
    notes = dict(zip(records["file"], counts))
    ok = ok[ok["file"].isin(keep)].copy()
    ok["note"] = ["; ".join(n for n in (f"newest of {notes[f]} results" if notes[f] > 1 else "",
                                        "" if c else why) if n)
                  for f, c, why in zip(ok["file"], ok["comparable"], ok["comparability_note"])]
    ok["row"] = "ours"
    ok["comparability"] = ok["comparability_note"]
    ok["layer"] = [layer_of(m, "", lay) for m, lay in zip(ok["metric"], ok["layer"])]
    ok["protocol"] = [e + (f" [{v}]" if v else "") for e, v in zip(ok["evaluation"], ok["variant"])]
    ok["table"] = [b + (f" [{v}]" if v else "") for b, v in zip(ok["benchmark"], ok["variant"])]
    ok["source"] = [str(Path(f).relative_to(Path(f).parents[1])) for f in ok["file"]]  # <checkpoint>/<file>
    ok["epochs"] = ok["epochs"].map(lambda e: "" if e is None or pd.isna(e) else str(int(e)))
    return ok


def _candidates(pub: pd.DataFrame, row: pd.Series, reference: Reference) -> pd.DataFrame:
    """Published rows of ``row``'s benchmark, protocol, metric and layer for its recipe (or ``reference``)."""
    if pub is None or not row["published_protocol"]:
        return pub.iloc[0:0] if pub is not None else pd.DataFrame()
    method, epochs = reference or (row["recipe_method"], row["recipe_epochs"])
    rows = pub[(pub["benchmark"] == row["benchmark"]) & (pub["protocol"] == row["published_protocol"])
               & (pub["metric"] == row["metric"]) & (pub["layer"] == row["layer"]) & (pub["method"] == method)
               & (pub["epochs"] == str(epochs)) & (pub["arch"] == row["recipe_arch"])]
    if row["recipe_data"] and reference is None:
        rows = rows[rows["pretrain_data"] == row["recipe_data"]]
    return rows


def _hold_against(rows: pd.DataFrame, pub: Optional[pd.DataFrame], reference: Reference) -> pd.DataFrame:
    """Fill reference, delta, spread and within_spread of our rows; note what could not be matched."""
    rows = rows.copy()
    rows["reference"], rows["within_spread"] = "", ""
    rows["reference_value"], rows["delta"], rows["spread"] = float("nan"), float("nan"), float("nan")
    for i, r in rows.iterrows():
        match = _candidates(pub, r, reference)
        if match.empty:
            if r["published_protocol"] and pub is not None and r["comparable"]:
                recipe = " ".join(str(x) for x in reference or (r["recipe_method"], r["recipe_epochs"]) if x)
                rows.at[i, "note"] = _join(r["note"], f"no published {r['published_protocol']!r} row for "
                                                      f"{recipe or 'an unknown recipe'} ({r['recipe_arch']})")
            continue
        m = match.iloc[0]
        rows.at[i, "reference"] = f"{m['method']} {m['epochs']}ep {m['arch']} {m['pretrain_data']} ({m['source']}): " \
                                  f"{m['value']:g}" + (f" +-{m['spread']:g}" if pd.notna(m["spread"]) else "")
        also = [f"{a['value']:g} ({a['source']})" for _, a in match.iloc[1:].iterrows()]
        if also:
            rows.at[i, "note"] = _join(rows.at[i, "note"], "also published: " + ", ".join(also))
        rows.at[i, "reference_value"], rows.at[i, "spread"] = m["value"], m["spread"]
        if r["recipe_deviations"]:
            rows.at[i, "note"] = _join(rows.at[i, "note"], f"pretrained off the published recipe: "
                                                           f"{r['recipe_deviations']}")
        if r["comparable"]:
            delta = r["value"] - m["value"]
            rows.at[i, "delta"] = delta
            if pd.notna(m["spread"]):
                rows.at[i, "within_spread"] = "within" if abs(delta) <= m["spread"] + 1e-9 else "outside"
    return rows


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def compile_tables(results: pd.DataFrame, published: Optional[pd.DataFrame] = None,
                   reference: Reference = None) -> Dict[str, pd.DataFrame]:
    """``{table name: DataFrame}``; table names are benchmarks, with ``[variant]`` for protocol variants.

    Published rows are listed beside ours only for the benchmark and published protocol our rows ran.
    """
    mine = ours(results)
    tables: Dict[str, pd.DataFrame] = {}
    for name, rows in mine.groupby("table", sort=True):
        rows = _hold_against(rows, published, reference)
        labels = set(rows["published_protocol"]) - {""}
        if published is not None and labels:
            pub = published[(published["benchmark"] == rows["benchmark"].iloc[0])
                            & published["protocol"].isin(labels) & published["metric"].isin(rows["metric"])].copy()
            pub["row"], pub["reference"], pub["within_spread"] = "published", "", ""
            pub["reference_value"], pub["delta"] = float("nan"), float("nan")
            pub["dataset"] = pub["benchmark"].map(published_dataset)
            pub["comparable"], pub["comparability"], pub["checkpoint"] = None, "", ""
            rows = pd.concat([rows, pub], ignore_index=True)
        rows["_published"] = rows["row"] == "published"
        tables[name] = rows.sort_values(["_published", "layer", "metric"], kind="stable")[COLUMNS].reset_index(
            drop=True)
    return tables


def summary_rows(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (table, metric, checkpoint) of ours, with the reference row chosen for it and the delta: the
    report's summary, which holds each checkpoint against the published numbers rather than against the others."""
    keep = ["table", "dataset", "method", "layer", "metric", "value", "reference", "reference_value", "delta", "spread",
            "within_spread", "comparable", "comparability", "checkpoint"]
    parts = [t[t["row"] == "ours"].assign(table=name) for name, t in tables.items()]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=keep)
    rows = rows[~rows["metric"].str.contains(NOT_HEADLINE, regex=True)]
    order = rows.assign(_m=natural(rows["metric"])).sort_values(["table", "dataset", "layer", "_m", "method"],
                                                               kind="stable").index
    return rows.loc[order, keep].rename(columns={"checkpoint": "checkpoint_path", "method": "checkpoint"}).reset_index(
        drop=True)


def status_table(results: pd.DataFrame) -> pd.DataFrame:
    """One line per record that is not ok (failed or skipped), with the first line of its reason."""
    bad = results[results["status"] != "ok"].drop_duplicates("file")
    return pd.DataFrame({
        "checkpoint": labels(bad).tolist(),
        "evaluation": bad["evaluation"], "status": bad["status"],
        "reason": [str(e).splitlines()[0] if e else "" for e in bad["error"]], "file": bad["file"],
    }).reset_index(drop=True)
