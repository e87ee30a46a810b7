"""Training logs beside the checkpoints: CSV files (one per kind of row) and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Optional

from torch.utils.tensorboard import SummaryWriter


class MetricLog:
    """Appends rows to ``<out>/<kind>.csv`` and the same numbers to TensorBoard under ``<kind>/<name>``.

    On resume, what the interrupted run logged after its last checkpoint (CSV rows of epochs from
    ``start_epoch`` on, TensorBoard events from ``start_step`` on) is dropped, so the logs read as one run.
    """

    def __init__(self, out_dir: Path, tensorboard: bool = True, start_epoch: int = 0, start_step: int = 0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for path in self.out_dir.glob("*.csv"):
            with open(path, newline="") as f:
                self._rewrite(path, [r for r in csv.DictReader(f) if int(r["epoch"]) < start_epoch])
        self.tb: Optional[SummaryWriter] = None
        if tensorboard:
            self.tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=start_step or None)

    @staticmethod
    def _rewrite(path: Path, rows) -> None:
        if not rows:
            path.unlink()
            return
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def write(self, kind: str, step: int, row: Dict[str, float]) -> None:
        """``row`` must hold ``epoch``; ``step`` is the global step (the TensorBoard x axis)."""
        path = self.out_dir / f"{kind}.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", *row])
            if new:
                writer.writeheader()
            writer.writerow({"step": step, **row})
        if self.tb is not None:
            for name, value in row.items():
                if name != "epoch":
                    self.tb.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
