"""Compile result records into one table per benchmark, our rows beside the published ones.

Every row carries its protocol, dataset and layer, so no number stands without what produced it. Deltas
are given only for our rows whose evaluation is comparable (the published protocol on the published
dataset) and only against a published row of the same benchmark, metric and layer. A protocol variant
(a shortened run, the fast head-on-cached-features linear evaluation) gets a table of its own, so its
numbers never mix with the protocol's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import pandas as pd

from moco_bench.results.published import layer_of
from moco_bench.results.store import checkpoint_label

COLUMNS = ["row", "method", "epochs", "arch", "dataset", "protocol", "layer", "metric", "value", "delta", "reference",
           "source", "note"]
DEFAULT_REFERENCE = ("MoCo v2", "200")


def ours(results: pd.DataFrame) -> pd.DataFrame:
    """Our finished rows, the newest record winning where one evaluation of a checkpoint has several."""
    ok = results[results["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=COLUMNS + ["benchmark", "table"])
    ok["method"] = [checkpoint_label(p, s) for p, s in zip(ok["checkpoint"], ok["sha256"])]
    records = ok.drop_duplicates(["file"])[["file", "method", "evaluation", "finished"]].sort_values("finished")
    counts = records.groupby(["method", "evaluation"])["file"].transform("count")
    newest = records.groupby(["method", "evaluation"])["file"].transform("last")
    keep = set(records.loc[records["file"] == newest, "file"])
    notes = dict(zip(records["file"], counts))
    ok = ok[ok["file"].isin(keep)].copy()
    ok["note"] = ["; ".join(n for n in (f"newest of {notes[f]} results" if notes[f] > 1 else "",
                                        "" if c else "not comparable with published (other data or protocol)") if n)
                  for f, c in zip(ok["file"], ok["comparable"])]
    ok["row"] = "ours"
    ok["layer"] = [layer_of(m, "", lay) for m, lay in zip(ok["metric"], ok["layer"])]
    ok["protocol"] = [e + (f" [{v}]" if v else "") for e, v in zip(ok["evaluation"], ok["variant"])]
    ok["table"] = [b + (f" [{v}]" if v else "") for b, v in zip(ok["benchmark"], ok["variant"])]
    ok["source"] = [str(Path(f).relative_to(Path(f).parents[1])) for f in ok["file"]]  # <checkpoint>/<file>
    ok["epochs"] = ok["epochs"].map(lambda e: "" if e is None or pd.isna(e) else str(int(e)))
    return ok


def compile_tables(results: pd.DataFrame, published: Optional[pd.DataFrame] = None,
                   reference: Sequence[str] = DEFAULT_REFERENCE) -> Dict[str, pd.DataFrame]:
    """``{table name: DataFrame}``; table names are benchmarks, with ``[variant]`` for protocol variants."""
    mine = ours(results)
    tables: Dict[str, pd.DataFrame] = {}
    for name, rows in mine.groupby("table", sort=True):
        rows = rows.copy()
        benchmark = rows["benchmark"].iloc[0]
        pub = published[published["benchmark"] == benchmark].copy() if published is not None else None
        rows["delta"], rows["reference"] = float("nan"), ""
        if pub is not None and not pub.empty:
            ref = pub[(pub["method"] == reference[0]) & (pub["epochs"] == str(reference[1]))]
            for i, r in rows.iterrows():
                match = ref[(ref["metric"] == r["metric"]) & (ref["layer"] == r["layer"])]
                if r["comparable"] and not match.empty:
                    m = match.iloc[0]
                    rows.at[i, "delta"] = r["value"] - m["value"]
                    rows.at[i, "reference"] = f"{m['method']} {m['epochs']}ep ({m['source']})"
            pub["row"], pub["dataset"], pub["delta"], pub["reference"] = "published", "", float("nan"), ""
            pub = pub[pub["metric"].isin(rows["metric"]) | pub["layer"].isin(rows["layer"])]
            rows = pd.concat([rows, pub], ignore_index=True)
        rows["_published"] = rows["row"] == "published"
        tables[name] = rows.sort_values(["_published", "layer", "metric"], kind="stable")[COLUMNS].reset_index(
            drop=True)
    return tables


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Our checkpoints side by side: one row per (table, protocol, layer, metric), one column per checkpoint.

    Spreads (``_std``/``_min``/``_max``), last-epoch values and top-5 stay in the per-benchmark tables, which also
    hold the protocol of every number; the table name says which protocol variant a row comes from.
    """
    mine = ours(results)
    mine = mine[~mine["metric"].str.contains(r"(?:_std|_min|_max|_last)$|top5", regex=True)]
    if mine.empty:
        return pd.DataFrame()
    index = ["table", "protocol", "layer", "metric"]
    wide = mine.assign(protocol=mine["evaluation"]).pivot_table(index=index, columns="method", values="value",
                                                                aggfunc="first")
    natural = lambda col: col.str.replace(r"\d+", lambda m: m.group(0).zfill(6), regex=True)  # noqa: E731
    return wide.reset_index().sort_values(index, key=natural).reset_index(drop=True)


def status_table(results: pd.DataFrame) -> pd.DataFrame:
    """One line per record that is not ok (failed or skipped), with the first line of its reason."""
    bad = results[results["status"] != "ok"].drop_duplicates("file")
    return pd.DataFrame({
        "evaluation": bad["evaluation"], "status": bad["status"],
        "reason": [str(e).splitlines()[0] if e else "" for e in bad["error"]], "file": bad["file"],
    }).reset_index(drop=True)
