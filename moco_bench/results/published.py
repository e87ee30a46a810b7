"""Published numbers (``results/published/numbers.csv``) and the layer each figure was measured on."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from moco_bench.core.errors import DataError

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "results" / "published" / "numbers.csv"
COLUMNS = ("method", "pretrain_data", "epochs", "arch", "benchmark", "protocol", "metric", "value", "spread", "source",
           "note")
_FEATURE = re.compile(r"feature[1-5]")
FINETUNED = ("AP", "mIoU")  # metrics of protocols that fine-tune the whole network (detection, segmentation)


def layer_of(metric: str, protocol: str = "", layer: str = "") -> str:
    """The layer a number belongs to: an explicit one, else ``featureN`` named in metric or protocol, else GAP
    for classification metrics and the whole network for detection and segmentation ones (fine-tuned)."""
    if layer and layer != "all":
        return layer
    for text in (metric, protocol):
        if m := _FEATURE.search(text or ""):
            return m.group(0)
    return "finetuned" if str(metric).startswith(FINETUNED) else "gap"


def load_published(path: Path | str = DEFAULT_CSV) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"epochs": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read published numbers ({e})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: published-numbers CSV lacks columns {missing}")
    df["value"] = pd.to_numeric(df["value"], errors="raise")
    df["spread"] = pd.to_numeric(df["spread"].replace("", float("nan")), errors="raise")
    df["layer"] = [layer_of(m, p) for m, p in zip(df["metric"], df["protocol"])]
    return df
