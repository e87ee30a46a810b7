"""The report as one self-contained HTML page (templates/report.html.j2): styles inline, plots as data URIs.

It opens from an email attachment or a cluster's file browser. Visible text names datasets and checkpoints,
never paths: a path goes in a ``title`` tooltip or inside a ``<details>`` element, and free text from records
(failure reasons, notes) has its paths shortened to their last part, the full text in the tooltip.
"""

from __future__ import annotations

import base64
import re
from typing import Dict, List, Sequence, Tuple

import jinja2
import pandas as pd

from moco_bench.results.plots import Figure
from moco_bench.results.store import checkpoint_label
from moco_bench.results.tables import natural, status_table, summary_rows

_SEEDS = r"_(?:std|min|max)$"  # spreads of a metric measured over several seeds
_PATH = re.compile(r"(?<![\w.:/~-])~?/[\w.@+%-]+(?:/[\w.@+%-]*)+")
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("moco_bench.results", "templates"),
                          autoescape=jinja2.select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)


def short_paths(text: str) -> str:
    """``FileNotFoundError: /root/data/VOC2007 missing`` -> ``FileNotFoundError: …/VOC2007 missing``."""
    return _PATH.sub(lambda m: "…/" + [p for p in m.group(0).split("/") if p][-1], str(text or ""))


def _number(value, fmt: str = ".2f") -> str:
    return "" if value is None or pd.isna(value) else format(value, fmt)


def verdict(comparable, reference: str, within: str, spread) -> Dict[str, str]:
    """The coloured word beside a delta: within/outside the published spread, or why there is no verdict."""
    if not comparable:
        return {"css": "na", "text": "not comparable"}
    if not reference:
        return {"css": "na", "text": "no published row"}
    if within:
        return {"css": within, "text": f"{within} ±{spread:g}"}
    return {"css": "nospread", "text": "no spread published"}


def _reference(r: pd.Series) -> Dict[str, str]:
    """The published value (with its spread) and, apart, which row it is: the table's text without its value."""
    if not r["reference"]:
        return {"value": "—", "row": ""}
    value = f"{r['reference_value']:g}" + ("" if pd.isna(r["spread"]) else f" ± {r['spread']:g}")
    return {"value": value, "row": r["reference"].rsplit(": ", 1)[0]}


def _checkpoints(df: pd.DataFrame) -> List[dict]:
    """The header's list: what was evaluated, with its recipe, hash prefix and when."""
    out = []
    for (path, sha), g in df.groupby(["checkpoint", "sha256"], sort=True):
        first = g.iloc[0]
        recipe = " ".join(str(x) for x in (first["recipe_method"], f"{first['recipe_epochs']}ep" if
                                            first["recipe_epochs"] else "", first["recipe_arch"],
                                            first["recipe_data"]) if x)
        if first["recipe_deviations"]:
            recipe += f" (off the published recipe: {first['recipe_deviations']})"
        dates = sorted(d for d in g["finished"] if d)
        per_file = g.drop_duplicates("file")["status"].value_counts()
        out.append({"label": checkpoint_label(path, sha), "path": path, "recipe": recipe or "unknown recipe",
                    "sha": str(sha)[:12], "dates": _date_range(dates),
                    "counts": ", ".join(f"{n} {s}" for s, n in per_file.items())})
    return out


def _date_range(dates: Sequence[str]) -> str:
    if not dates:
        return ""
    first, last = dates[0][:16].replace("T", " "), dates[-1][:16].replace("T", " ")
    return first if first == last else f"{first} – {last}"


def _summary(tables: Dict[str, pd.DataFrame], roots: Dict[str, str]) -> List[dict]:
    """The summary grouped by benchmark table: one row per (table, metric, checkpoint)."""
    rows = summary_rows(tables)
    groups = []
    for name, g in rows.groupby("table", sort=False):
        groups.append({"name": name, "anchor": _anchor(name), "rows": [{
            "checkpoint": r["checkpoint"], "path": r["checkpoint_path"], "dataset": r["dataset"],
            "root": roots.get(r["dataset"], ""), "layer": r["layer"], "metric": r["metric"],
            "value": _number(r["value"]), "reference": _reference(r), "delta": _number(r["delta"], "+.2f"),
            "verdict": verdict(r["comparable"], r["reference"], r["within_spread"], r["spread"]),
        } for _, r in g.iterrows()]})
    return groups


def _anchor(name: str) -> str:
    return "b-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def _why_not(comparability: dict, note: str) -> dict:
    """A group's header: the differing config keys, said once, their values in a detail table."""
    changed = [(k, v.get("protocol"), v.get("run")) for k, v in (comparability.get("differences") or {}).items()]
    changed += [(k, v.get("required"), v.get("run")) for k, v in (comparability.get("unmet") or {}).items()]
    protocol = comparability.get("protocol")
    where = f"evaluate/{protocol}.yaml" if protocol else "a published protocol"
    if comparability.get("reason") or not changed:
        return {"text": short_paths(note), "changes": []}
    keys = ", ".join(k for k, _, _ in changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    return {"text": f"not comparable with {where}: {len(changed)} setting{'s' * (len(changed) > 1)} differ "
                    f"({keys})", "changes": [(k, str(a), str(b)) for k, a, b in changed]}


def _remarks(note: str, comparability: str) -> str:
    """A row's note without the comparability text, which its group header states once."""
    text = note.replace(comparability, "") if comparability else note
    return re.sub(r"^(?:;\s*)+|(?:;\s*)+$", "", re.sub(r"(?:;\s*){2,}", "; ", text)).strip()


def _over_seeds(ours: pd.DataFrame) -> Dict[tuple, Dict[str, float]]:
    """``{(checkpoint, layer, metric): {"std": .., "min": .., "max": ..}}`` from the ``<metric>_std`` (...) rows."""
    out: Dict[tuple, Dict[str, float]] = {}
    for _, r in ours[ours["metric"].str.contains(_SEEDS)].iterrows():
        base, stat = re.match(r"(.*)_(std|min|max)$", r["metric"]).groups()
        out.setdefault((r["method"], r["layer"], base), {})[stat] = r["value"]
    return out


def _our_row(r: pd.Series, comparable: bool, text: str, seeds: Dict[str, float]) -> dict:
    """One row of ours; a value measured over seeds shows its std, its range in the tooltip."""
    value = _number(r["value"]) + (f" ± {seeds['std']:.2f}" if "std" in seeds else "")
    spread = f"over seeds: min {seeds['min']:.2f}, max {seeds['max']:.2f}" if {"min", "max"} <= set(seeds) else ""
    return {"checkpoint": r["method"], "path": r["checkpoint"], "layer": r["layer"], "metric": r["metric"],
            "value": value, "value_title": spread, "reference": _reference(r), "delta": _number(r["delta"], "+.2f"),
            "verdict": verdict(comparable, r["reference"], r["within_spread"], r["spread"]),
            "note": short_paths(_remarks(r["note"], text)), "note_full": _remarks(r["note"], text)}


def _our_groups(ours: pd.DataFrame, why: Dict[str, dict], roots: Dict[str, str]) -> List[dict]:
    """Our rows grouped by dataset and comparability, comparable groups first; spreads over seeds folded into
    the value they belong to (the CSV keeps them as rows)."""
    seeds = _over_seeds(ours)
    ours = ours[~ours["metric"].str.contains(_SEEDS)]
    ours = ours.assign(_rank=~ours["comparable"].astype(bool), _metric=natural(ours["metric"]))
    groups = []
    for (dataset, _, text), g in ours.sort_values(["layer", "_metric"], kind="stable").groupby(
            ["dataset", "_rank", "comparability"], sort=True):
        comparable = bool(g["comparable"].iloc[0])
        header = {"text": text, "changes": []} if comparable else _why_not(why.get(text, {}), text)
        groups.append({"dataset": dataset or "unnamed dataset", "root": roots.get(dataset, ""),
                       "comparable": comparable, **header,
                       "rows": [_our_row(r, comparable, text, seeds.get((r["method"], r["layer"], r["metric"]), {}))
                                for _, r in g.iterrows()]})
    return groups


def _published_groups(pub: pd.DataFrame) -> List[dict]:
    return [{"dataset": dataset or "dataset not named", "protocol": protocol, "rows": [{
        "model": f"{r['method']} {r['epochs']}ep {r['arch']}", "layer": r["layer"], "metric": r["metric"],
        "value": f"{r['value']:g}" + ("" if pd.isna(r["spread"]) else f" ± {r['spread']:g}"),
        "source": r["source"], "note": r["note"]} for _, r in g.iterrows()]}
        for (dataset, protocol), g in pub.assign(_m=natural(pub["metric"])).sort_values(
            ["layer", "_m"], kind="stable").groupby(["dataset", "protocol"], sort=False)]


def _sections(tables: Dict[str, pd.DataFrame], why: Dict[str, dict], roots: Dict[str, str],
              plots: Sequence[Tuple[Figure, bytes]]) -> List[dict]:
    out = []
    for name, table in tables.items():
        ours = table[table["row"] == "ours"]
        out.append({
            "name": name, "anchor": _anchor(name), "protocols": ", ".join(sorted(set(ours["protocol"]))),
            "groups": _our_groups(ours, why, roots),
            "published": _published_groups(table[table["row"] == "published"]),
            "figures": [{"caption": fig.caption, "alt": f"{fig.kind}: {fig.table} on {fig.dataset}",
                         "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
                        for fig, png in plots if fig.table == name],
        })
    return out


def _problems(df: pd.DataFrame) -> List[dict]:
    """Failed and skipped evaluations, one line each; the record's path in the tooltip."""
    bad = status_table(df) if not df.empty else pd.DataFrame()
    return [{"checkpoint": r["checkpoint"], "evaluation": r["evaluation"], "status": r["status"],
             "reason": short_paths(r["reason"]), "reason_full": r["reason"], "file": r["file"]}
            for _, r in bad.iterrows()]


def render_page(df: pd.DataFrame, tables: Dict[str, pd.DataFrame], plots: Sequence[Tuple[Figure, bytes]],
                sources: Sequence[str], generated: str) -> str:
    """The page's HTML. ``df`` is store.load_results' frame, ``tables`` tables.compile_tables' output, ``plots``
    each figure with its PNG."""
    ok = df[df["status"] == "ok"] if not df.empty else df
    why = dict(zip(ok["comparability_note"], ok["comparability"])) if not ok.empty else {}
    roots = {dataset: ", ".join(sorted({str(r) for r in g["dataset_root"] if r}))  # tooltips of dataset names
             for dataset, g in ok.groupby("dataset")} if not ok.empty else {}
    return _ENV.get_template("report.html.j2").render(
        generated=generated, sources=[str(s) for s in sources],
        checkpoints=_checkpoints(df) if not df.empty else [],
        summary=_summary(tables, roots), sections=_sections(tables, why, roots, plots), problems=_problems(df),
        skipped=df.attrs.get("skipped") or [])
