"""The gpu-check table: every check of :mod:`.devices` and :mod:`.training` by name, run in order."""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List

from moco_bench.gpucheck import devices, training
from moco_bench.gpucheck.checks import Context, Row, guarded


def run_checks(ctx: Context, names: Iterable[str], deadline: float) -> List[Row]:
    """Every named check in order, printing its rows as they come; one that raises is a FAIL with the error."""
    table: Dict[str, Callable[[Context], List[Row]]] = {
        "versions": devices.versions, "moco": training.moco_steps, "data": training.data_path,
        "ddp": devices.ddp, "features": devices.features, "knn": devices.knn, "detection": training.detection}
    rows: List[Row] = []
    print(f"{'check':<46} {'status':<6} {'figure':<20} detail", flush=True)
    for name in names:
        if time.monotonic() > deadline:
            new = [Row(name, "SKIP", "", "over the --budget")]
        else:
            new = guarded(name, table[name], ctx)
        for row in new:
            print(f"{row.check:<46} {row.status:<6} {row.figure:<20} {row.detail}", flush=True)
        rows += new
    return rows
