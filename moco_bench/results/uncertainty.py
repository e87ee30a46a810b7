"""The intervals of a report's numbers, from what each record keeps: trials (``per_seed``) or per-example outputs
(the ``examples`` sidecar). See :mod:`moco_bench.results.stats` for the methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pandas as pd

from moco_bench.results import stats
from moco_bench.results.examples import Examples, load_examples
from moco_bench.results.files import NotReadable


@dataclass(frozen=True)
class Settings:
    """How intervals are computed (``moco-bench tables --resamples --seed --confidence``)."""

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def text(self) -> str:
        pct = f"{100 * self.confidence:g}%"
        return (f"[…]: {pct} intervals. A single run on a fixed test set: percentile bootstrap over its test images "
                f"({self.resamples} resamples, numpy seed {self.seed}; a difference of two checkpoints resamples "
                f"the same images for both, a paired bootstrap). † Several trials (seeds, low-shot samples): "
                f"Student t interval of their mean, from the sample standard deviation (ddof 1); a difference of "
                f"two checkpoints run with the same seeds is the paired t interval of the per-seed differences.")


@dataclass
class Uncertainty:
    """Intervals for the rows of :func:`moco_bench.results.store.load_results`' frame, computed on demand and
    remembered; ``problems`` lists each record whose per-example outputs could not be used, and why."""

    results: pd.DataFrame
    settings: Settings = field(default_factory=Settings)
    problems: List[str] = field(default_factory=list)
    _examples: Dict[str, Dict[str, Examples]] = field(default_factory=dict)
    _cache: Dict[Tuple, Optional[stats.Interval]] = field(default_factory=dict)

    def __post_init__(self):
        df = self.results
        ok = df[df["status"] == "ok"] if not df.empty else df
        self._trials = {(f, m): v for f, m, v in zip(ok.get("file", []), ok.get("metric", []), ok.get("per_seed", []))
                        if isinstance(v, list)}
        self._blocks = {f: b for f, b in zip(ok.get("file", []), ok.get("examples", [])) if isinstance(b, dict)}
        self._seeds = {f: tuple(s) for f, s in zip(ok.get("file", []), ok.get("seeds", [])) if isinstance(s, list)}

    def examples(self, file: str, metric: str) -> Optional[Examples]:
        if file not in self._examples:
            self._examples[file] = {}
            if file in self._blocks:
                try:
                    self._examples[file] = load_examples(Path(file), self._blocks[file])
                except NotReadable as e:
                    self.problems.append(f"no interval from {e}")
        return self._examples[file].get(metric)

    def single(self, file: str, metric: str) -> Optional[stats.Interval]:
        """Over trials where the record has two or more, else over test images where it kept its outputs."""
        key = ("single", file, metric)
        if key not in self._cache:
            s, trials, ex = self.settings, self._trials.get((file, metric)), None
            interval = stats.trials_interval(trials, s.confidence) if trials and len(trials) > 1 else None
            if interval is None and (ex := self.examples(file, metric)) is not None:
                interval = stats.bootstrap_interval(ex, s.resamples, s.seed, s.confidence)
            self._cache[key] = interval
        return self._cache[key]

    def paired(self, file_a: str, file_b: str, metric: str) -> Optional[stats.Interval]:
        """A - B: over trials run with the same seeds (paired t), else over the same test images (paired
        bootstrap); None where the records allow neither."""
        key = ("paired", file_a, file_b, metric)
        if key not in self._cache:
            s, ta, tb = self.settings, self._trials.get((file_a, metric)), self._trials.get((file_b, metric))
            if ta and tb and self._seeds.get(file_a) and self._seeds.get(file_a) == self._seeds.get(file_b):
                self._cache[key] = stats.paired_trials(ta, tb, s.confidence)
            else:
                a, b = self.examples(file_a, metric), self.examples(file_b, metric)
                same = a is not None and b is not None and (a.n, a.images_sha256) == (b.n, b.images_sha256)
                self._cache[key] = stats.paired_difference(a, b, s.resamples, s.seed, s.confidence) if same else None
        return self._cache[key]
