"""The results store: atomic JSON records, no silent overwrite, and a pandas view of a folder of them."""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd

from moco_bench.core.atomic import atomic_write_text
from moco_bench.core.errors import ConfigError, ResultExistsError
from moco_bench.results.files import NotReadable, read_regular
from moco_bench.results.schema import SchemaError, check_readable, validate

BASELINES = ("random:", "pixels:")  # checkpoint specs that are not files: random init, raw pixels
MAX_RECORD_BYTES = 32 << 20  # a record is kilobytes; anything this large was not written by moco-bench
MAX_LABEL = 60
# File stems that say nothing of which run they come from: the folder above names it ("mocov2_r50/checkpoint_0199")
_GENERIC_STEM = re.compile(r"^(?:checkpoint|ckpt|model|last|best|final|backbone|weights|epoch|converted|pretrain)"
                           r"(?:[\W_]*(?:final|last|best|\d+))*$", re.IGNORECASE)


def checkpoint_label(path: str, sha256: str) -> str:
    """A checkpoint's name in folders and tables: its file stem (or ``random-<arch>-s<seed>``, ``pixels``) and 8
    hex digits of its hash, so two checkpoints with the same file name never share a results folder."""
    path = str(path)
    stem = path.rstrip(":") if path.startswith(BASELINES) else Path(path).name.split(".")[0]  # arch names hold dots
    stem = stem.replace(":", "-").replace("@", "-s")
    return f"{stem}-{str(sha256)[:8]}"


def is_baseline(path: str) -> bool:
    """A checkpoint spec that is not a trained network (``random:<arch>``, ``pixels:``)."""
    return str(path).startswith(BASELINES)


def default_label(path: str) -> str:
    """A checkpoint's readable name where ``--label`` gave none: ``random init resnet50``, ``raw pixels``, the file
    stem, or the folder and stem where the stem is generic (``mocov2_demo/checkpoint_0002``)."""
    path = str(path)
    if path.startswith("random:"):
        arch, _, seed = path[len("random:"):].partition("@")
        return " ".join(x for x in ("random init", arch, f"seed {seed}" if seed not in ("", "0") else "") if x)
    if path.startswith("pixels:"):
        return "raw pixels"
    p = Path(path)
    stem = p.name.split(".")[0] or p.name
    return f"{p.parent.name}/{stem}" if _GENERIC_STEM.match(stem) and p.parent.name else stem


def check_label(label: str) -> str:
    """``--label``: one line of at most 60 printable characters (it heads a column and names plot series)."""
    bad = [c for c in label if unicodedata.category(c)[0] in "CZ" and c != " "]
    if not label.strip() or label != label.strip() or len(label) > MAX_LABEL or bad:
        raise ConfigError(f"--label {label!r}: give 1 to {MAX_LABEL} printable characters, no control characters, "
                          "no leading or trailing space")
    return label


def read_result(path: Path) -> Dict[str, Any]:
    """Read and check one record; raises ``SchemaError`` naming the file on anything malformed, including what a
    planted file does (a FIFO or a device, a huge or deeply nested file, a field of the wrong type)."""
    path = Path(path)
    try:
        record = json.loads(read_regular(path, MAX_RECORD_BYTES).decode("utf-8"))
        check_readable(record)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise SchemaError(f"{path}: not a moco-bench result: JSON nested deeper than a record ever is") from None
    except NotReadable as e:
        raise SchemaError(f"{e} (not a moco-bench result)") from None
    except SchemaError as e:
        raise SchemaError(f"{path}: not a moco-bench result: {e}") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
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
        raise ResultExistsError(f"{path}: a finished result is already there (use --force to replace it)", path=path)
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
            "variant": ev.get("variant") or "",
            "benchmark": ev.get("benchmark") or ev["name"],
            "dataset": ev.get("dataset") or "",
            "dataset_root": ev.get("dataset_root") or "",
            "split": ev.get("split") or "",
            "layer": ev.get("layer") or "",
            "comparable": bool(ev.get("comparable", False)),  # a record that does not say is not comparable
            "comparability_note": ev.get("comparability_note") or "not comparable: the record does not say",
            "published_protocol": ev.get("published_protocol") or "",
            "comparability": ev.get("comparability") or {},
            "checkpoint": ck.get("path") or "",
            "sha256": ck.get("sha256") or "",
            "label": ck.get("label") or default_label(ck.get("path") or ""),
            "arch": ck.get("arch") or "",
            "epochs": ck.get("epochs"),
            "recipe_method": recipe.get("method") or "",
            "recipe_epochs": "" if recipe.get("epochs") is None else str(recipe["epochs"]),
            "recipe_arch": recipe.get("arch") or "",
            "recipe_data": recipe.get("pretrain_data") or "",
            "recipe_deviations": _deviations(recipe.get("deviations")),
            "status": rec["status"],
            "error": rec.get("error"),
            "finished": rec["timing"].get("end") or "",
            "examples": rec.get("examples"),
            "seeds": ev.get("seeds"),
        }
        metrics = rec["metrics"] or {None: float("nan")}
        per_seed = rec.get("per_seed") or {}
        for name, value in metrics.items():
            rows.append({**base, "metric": name, "value": value, "per_seed": per_seed.get(name)})
    df = pd.DataFrame(rows)
    df.attrs["skipped"] = skipped
    return df
