"""The results store: atomic JSON records, no silent overwrite, and a pandas view of a folder of them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd

from moco_bench.core.atomic import atomic_write_text
from moco_bench.core.errors import ResultExistsError
from moco_bench.results.schema import SchemaError, validate

BASELINES = ("random:", "pixels:")  # checkpoint specs that are not files: random init, raw pixels


def checkpoint_label(path: str, sha256: str) -> str:
    """A checkpoint's name in folders and tables: its file stem (or ``random-<arch>-s<seed>``, ``pixels``) and 8
    hex digits of its hash, so two checkpoints with the same file name never share a results folder."""
    path = str(path)
    stem = path.rstrip(":") if path.startswith(BASELINES) else Path(path).name.split(".")[0]  # arch names hold dots
    stem = stem.replace(":", "-").replace("@", "-s")
    return f"{stem}-{str(sha256)[:8]}"


def read_result(path: Path) -> Dict[str, Any]:
    """Read and validate one record; raises ``SchemaError`` naming the file on anything malformed."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        validate(record)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: not valid JSON ({e})") from None
    except SchemaError as e:
        raise SchemaError(f"{path}: not a moco-bench result: {e}") from None
    return record


def is_finished(path: Path) -> bool:
    """True when ``path`` holds a valid record with status ok (eval-all skips those)."""
    try:
        return read_result(path)["status"] == "ok"
    except (OSError, SchemaError):
        return False


def write_result(path: Path, record: Dict[str, Any], force: bool = False) -> Path:
    """Write ``record`` to ``path`` atomically.

    A finished (status ok) record already there is kept unless ``force``; a failed or skipped one is
    replaced, since re-running is how a failure gets fixed.
    """
    path = Path(path)
    validate(record)
    if not force and is_finished(path):
        raise ResultExistsError(f"{path}: a finished result is already there (use --force to replace it)")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return path


def _in_work_folder(path: Path, root: Path) -> bool:
    """Whether ``path`` is below an evaluation's work folder: a folder with a result file of its name beside it."""
    for parent in path.parents:
        if parent == root:
            return False
        if parent.with_name(parent.name + ".json").is_file():
            return True
    return False


def _deviations(deviations) -> str:
    """``compute.precision fp32 -> bf16; ...``: how the checkpoint's pretraining left its published recipe."""
    if not isinstance(deviations, dict):
        return ""
    return "; ".join(f"{k} {v.get('protocol')} -> {v.get('run')}" if isinstance(v, dict) else str(k)
                     for k, v in deviations.items())


def load_results(folder: Path | str | List[Path | str]) -> pd.DataFrame:
    """One row per (result file, metric) for every ``*.json`` under the given folder(s).

    Files that are not moco-bench results are skipped with a warning naming them; their paths and
    reasons are listed in ``df.attrs["skipped"]``. An evaluation's work folder (``<evaluation>/`` beside
    ``<evaluation>.json``: logs, detectron2's metrics) is not searched.
    """
    folders = folder if isinstance(folder, list) else [folder]
    rows, skipped = [], []
    files = []
    for f in folders:
        f = Path(f)
        files.extend([f] if f.is_file() else sorted(p for p in f.rglob("*.json") if not _in_work_folder(p, f)))
    for path in files:
        try:
            rec = read_result(path)
        except (OSError, SchemaError) as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
            skipped.append({"file": str(path), "reason": str(e)})
            continue
        ev, ck = rec["evaluation"], rec["checkpoint"]
        recipe = ck.get("recipe") or {}
        base = {
            "file": str(path),
            "evaluation": ev["name"],
            "protocol": ev["protocol"],
            "variant": ev.get("variant", ""),
            "benchmark": ev.get("benchmark", ev["name"]),
            "dataset": ev.get("dataset", ""),
            "dataset_root": ev.get("dataset_root", ""),
            "split": ev.get("split", ""),
            "layer": ev.get("layer", ""),
            "comparable": bool(ev.get("comparable", False)),  # a record that does not say is not comparable
            "comparability_note": ev.get("comparability_note", "not comparable: the record does not say"),
            "published_protocol": ev.get("published_protocol") or "",
            "comparability": ev.get("comparability") or {},
            "checkpoint": ck.get("path", ""),
            "sha256": ck.get("sha256", ""),
            "arch": ck.get("arch", ""),
            "epochs": ck.get("epochs"),
            "recipe_method": recipe.get("method") or "",
            "recipe_epochs": "" if recipe.get("epochs") is None else str(recipe["epochs"]),
            "recipe_arch": recipe.get("arch") or "",
            "recipe_data": recipe.get("pretrain_data") or "",
            "recipe_deviations": _deviations(recipe.get("deviations")),
            "status": rec["status"],
            "error": rec.get("error"),
            "finished": rec["timing"].get("end", ""),
        }
        metrics = rec["metrics"] or {None: float("nan")}
        for name, value in metrics.items():
            rows.append({**base, "metric": name, "value": value})
    df = pd.DataFrame(rows)
    df.attrs["skipped"] = skipped
    return df
