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

from moco_bench.results.pivot import Cell, Pivot
from moco_bench.results.plots import Figure
from moco_bench.results.stats import describe
from moco_bench.results.tables import labels, natural, status_table

_SEEDS = r"_(?:std|min|max)$"  # spreads of a metric measured over several seeds
PIXEL_RATIO = 2  # PNG pixels per CSS pixel: plots are drawn at twice the size they are shown
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
    return spread_badge(within, spread)


def spread_badge(within: str, spread) -> Dict[str, str]:
    """Whether a delta to a published row lies within the spread it publishes (``within``/``outside``/"")."""
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
    df = df.assign(_label=labels(df))
    for (path, sha), g in df.groupby(["checkpoint", "sha256"], sort=True):
        first = g.iloc[0]
        recipe = " ".join(str(x) for x in (first["recipe_method"], f"{first['recipe_epochs']}ep" if
                                            first["recipe_epochs"] else "", first["recipe_arch"],
                                            first["recipe_data"]) if x)
        if first["recipe_deviations"]:
            recipe += f" (off the published recipe: {first['recipe_deviations']})"
        dates = sorted(d for d in g["finished"] if d)
        per_file = g.drop_duplicates("file")["status"].value_counts()
        out.append({"label": first["_label"], "path": path, "recipe": recipe or "unknown recipe",
                    "sha": str(sha)[:12], "dates": _date_range(dates),
                    "counts": ", ".join(f"{n} {s}" for s, n in per_file.items())})
    return out


def _date_range(dates: Sequence[str]) -> str:
    if not dates:
        return ""
    first, last = dates[0][:16].replace("T", " "), dates[-1][:16].replace("T", " ")
    return first if first == last else f"{first} – {last}"


def _value(cell: Cell, difference: str = "") -> dict:
    """A pivot cell: the value, its interval below it (a dagger marks one over trials), how it was obtained in the
    tooltip; ``difference`` names the two columns of a difference (``A - B``), which is shown signed."""
    iv, signed = cell.interval, bool(difference)
    how = (f"{difference} = {iv.text(signed=True)}: paired, " if difference else "") + describe(iv) if iv else \
        "no interval: the records kept no per-example outputs or trials for it"
    return {"text": f"{cell.value:{'+' if signed else ''}.2f}", "best": cell.best, "title": how,
            "ci": (iv.bracket(signed=signed) + (" †" if iv.method == "t" else "")) if iv else "",
            "sign": "" if not signed else "up" if iv and iv.low > 0 else "down" if iv and iv.high < 0 else "ns"}


def _pivot(pivot: Pivot, roots: Dict[str, str], why: Dict[str, dict]) -> dict:
    """The summary's template context: columns (key ones first), groups of rows, verdicts."""
    groups = []
    for g in pivot.groups:
        note = "" if g.comparable else _why_not(why.get(g.note, {}), g.note)["text"]
        groups.append({"table": g.table, "anchor": _anchor(g.table), "dataset": g.dataset or "unnamed dataset",
                       "root": roots.get(g.dataset, ""), "note": note, "verdict": g.verdict, "rows": [{
                           "metric": r.metric, "key": r.key,
                           "cells": [_value(r.cells[c]) if c in r.cells else None for c in pivot.columns],
                           "diffs": [_value(r.diffs[c], pivot.diff_name(c)) if c in r.diffs else None
                                     for c in pivot.diff_columns],
                           "published": r.published or "—", "published_rows": r.published_rows,
                           "vs": [{"column": c, "delta": f"{d:+.2f}", "badge": spread_badge(w, sp)}
                                  for c, d, w, sp in r.vs_published]} for r in g.rows]})
    return {"columns": [{"label": c, "path": pivot.paths[c], "baseline": c == pivot.baseline} for c in pivot.columns],
            "diff_columns": [{"label": c, "title": pivot.diff_name(c)} for c in pivot.diff_columns],
            "baseline": pivot.baseline, "groups": groups, "method": pivot.method,
            "width": 3 + len(pivot.columns) + len(pivot.diff_columns)}


def _anchor(name: str) -> str:
    return "b-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def _why_not(comparability: dict, note: str) -> dict:
    """A group's header: the differing config keys, said once, their values in a detail table."""
    def entries(key: str) -> dict:  # a planted record may hold anything here
        found = comparability.get(key) if isinstance(comparability, dict) else None
        return {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}
    changed = [(k, v.get("protocol"), v.get("run")) for k, v in entries("differences").items()]
    changed += [(k, v.get("required"), v.get("run")) for k, v in entries("unmet").items()]
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
    """One row of ours; a value measured over seeds shows the std its record holds (population, as the published
    spread beside it), its range in the tooltip; the summary gives its t interval."""
    value = _number(r["value"]) + (f" ± {seeds['std']:.2f}" if "std" in seeds else "")
    spread = (f"± the population std over seeds (ddof 0, as the published spreads are computed); min "
              f"{seeds['min']:.2f}, max {seeds['max']:.2f}") if {"min", "max"} <= set(seeds) else ""
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


def png_width(png: bytes) -> int:
    """A PNG's width in pixels, from its IHDR chunk."""
    return int.from_bytes(png[16:20], "big")


def _sections(tables: Dict[str, pd.DataFrame], why: Dict[str, dict], roots: Dict[str, str],
              plots: Sequence[Tuple[Figure, bytes, float]]) -> List[dict]:
    out = []
    for name, table in tables.items():
        ours = table[table["row"] == "ours"]
        out.append({
            "name": name, "anchor": _anchor(name), "protocols": ", ".join(sorted(set(ours["protocol"]))),
            "groups": _our_groups(ours, why, roots),
            "published": _published_groups(table[table["row"] == "published"]),
            "figures": [{"caption": fig.caption, "alt": f"{fig.kind}: {fig.table} on {fig.dataset}",
                         "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                         "width": round(png_width(png) / PIXEL_RATIO), "text_px": f"{text_px:.1f}"}
                        for fig, png, text_px in plots if fig.table == name],
        })
    return out


def _problems(df: pd.DataFrame) -> List[dict]:
    """Failed and skipped evaluations, one line each; the record's path in the tooltip."""
    bad = status_table(df) if not df.empty else pd.DataFrame()
    return [{"checkpoint": r["checkpoint"], "evaluation": r["evaluation"], "status": r["status"],
             "reason": short_paths(r["reason"]), "reason_full": r["reason"], "file": r["file"]}
            for _, r in bad.iterrows()]


def render_page(df: pd.DataFrame, tables: Dict[str, pd.DataFrame], pivot: Pivot,
                plots: Sequence[Tuple[Figure, bytes, float]], sources: Sequence[str], generated: str,
                problems: Sequence[str] = ()) -> str:
    """The page's HTML. ``df`` is store.load_results' frame, ``tables`` tables.compile_tables' output, ``pivot``
    the summary (pivot.build_pivot), ``plots`` each figure with its PNG and its smallest text in PNG pixels;
    ``problems``: per-example outputs that could not be used."""
    ok = df[df["status"] == "ok"] if not df.empty else df
    why = dict(zip(ok["comparability_note"], ok["comparability"])) if not ok.empty else {}
    roots = {dataset: ", ".join(sorted({str(r) for r in g["dataset_root"] if r}))  # tooltips of dataset names
             for dataset, g in ok.groupby("dataset")} if not ok.empty else {}
    return _ENV.get_template("report.html.j2").render(
        generated=generated, sources=[str(s) for s in sources],
        checkpoints=_checkpoints(df) if not df.empty else [],
        pivot=_pivot(pivot, roots, why) if pivot.groups else None, sections=_sections(tables, why, roots, plots),
        problems=_problems(df), skipped=df.attrs.get("skipped") or [], interval_problems=list(problems))
