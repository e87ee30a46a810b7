"""VOC07 SVM benchmarks (``make bench``): the cyanure path against a scikit-learn LinearSVC implementation of the
same protocol, as the anchors wrote it (fair_self_supervision_benchmark train_svm_kfold.py + test_svm.py: for
every class and cost, ``cross_val_score(LinearSVC, cv=3, scoring='average_precision')`` then a refit on all of
trainval; the best cross-validated cost's model scored on test), run over classes with the same processes.

1. On cached features: feature5 of an embedded mini-VOC (``--voc-n`` trainval + ``--voc-n`` test images, 10
   classes) extracted through the feature cache, ``--ckpt`` at 64 px (default ``random:resnet18_small_w0.5``, the
   demo backbone; a trained MoCo demo checkpoint gives features like a real run's). Targets: |mAP difference|
   <= 0.1 and the cyanure path >= 5x faster. Also shown: the cyanure path in the other ``svm.dtype`` (the
   protocol solves in float32; the anchors' liblinear in float64) and the same pipeline with the sklearn solver
   (refitting only the chosen cost).
2. ``--synthetic N``: the same on well-conditioned synthetic VOC-like features (N images per split, ``--dim``
   dims, 20 classes at VOC07's class frequencies; N 5011 with dim 8192 is VOC07 feature5's size), a regime
   where liblinear's dual coordinate descent is fast; reported, not a target.
Exits 1 on a missed target. Usage: ``python benchmarks/bench_svm.py [--voc-n 1000 --ckpt CKPT --jobs 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moco_bench.evaluators.catalog import load_evaluation  # noqa: E402
from moco_bench.evaluators.frozen.ap import average_precision  # noqa: E402
from moco_bench.evaluators.frozen.svm import SVMParams, l2_normalize, voc07_svm_on_features  # noqa: E402

CFG = load_evaluation(REPO / "evaluate/voc07_svm.yaml")
COSTS = [float(c) for c in CFG.svm.costs]
# VOC07 trainval images per class (aeroplane .. tvmonitor) / 5011: the class imbalance of the real task
VOC_FREQ = np.array([238, 243, 330, 181, 244, 186, 713, 337, 445, 141, 200, 421, 287, 245, 2008, 245, 96, 229, 261,
                     256]) / 5011


def voc_like(n, d, seed):
    """Non-negative multi-label features (sparse class patterns + shared factors + noise, like pooled ReLU maps),
    with VOC's 1/-1/0 targets (3% of positives difficult). The geometry is shared between seeds (splits)."""
    rng, g = np.random.default_rng(seed), np.random.default_rng(1234)
    present = rng.random((n, len(VOC_FREQ))) < VOC_FREQ
    patterns = np.abs(g.standard_normal((len(VOC_FREQ), d))) * (g.random((len(VOC_FREQ), d)) < 0.1) * 2
    x = present @ patterns + rng.standard_normal((n, 64)) @ g.standard_normal((64, d)) * 0.7
    x = np.maximum(x + rng.standard_normal((n, d)) + 0.5, 0).astype(np.float32)
    targets = np.where(present, 1.0, -1.0).astype(np.float32)
    targets[present & (rng.random(present.shape) < 0.03)] = 0.0
    return x, targets


def _anchors_class(X, t, Xtest, ttest, costs):
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import LinearSVC

    y = np.where(t > 0, 1, -1)  # the anchors keep difficult trainval images as negatives
    cv, models = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cost in costs:
            clf = LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0, penalty="l2",
                            loss="squared_hinge", tol=0.0001, dual=True, max_iter=2000, random_state=0)
            cv.append(cross_val_score(clf, X, y, cv=3, scoring="average_precision").mean())
            models.append(clf.fit(X, y))
    best = int(np.argmax(cv))
    return 100.0 * average_precision(ttest, models[best].decision_function(Xtest))


def anchors_sklearn(train_X, train_T, test_X, test_T, costs, jobs):
    X, Xt = l2_normalize(train_X, 1e-5), l2_normalize(test_X, 1e-5)
    aps = Parallel(n_jobs=jobs, backend="loky")(delayed(_anchors_class)(X, train_T[:, c], Xt, test_T[:, c], costs)
                                                for c in range(train_T.shape[1]))
    return float(np.mean(aps))


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def cached_features(ckpt: str, n: int, tmp: Path):
    """feature5 of an embedded mini-VOC through the real feature cache (under ``tmp``), as in-memory arrays."""
    from moco_bench.convert import load_backbone
    from moco_bench.data.embedded import build_minivoc
    from moco_bench.evaluators.features import load_split

    voc = build_minivoc(tmp / "minivoc", n_trainval=n, n_test=n)
    cfg = load_evaluation(REPO / "evaluate/demo/voc07_svm.yaml", [f"data.root={voc}"])
    backbone = load_backbone(ckpt)
    train, test = (load_split(backbone, cfg, tmp / "features", s, workers=1) for s in ("trainval", "test"))
    return (np.array(train.features["feature5"]), train.labels, np.array(test.features["feature5"]), test.labels,
            list(cfg.data.classes))


def compare(title, Xtr, Ttr, Xte, Tte, classes, jobs) -> tuple[float, float]:
    """Run the three implementations; print them; return (|mAP diff| cyanure vs anchors, speedup)."""
    cy = SVMParams.from_config(CFG.svm)
    ours, t_ours = timed(voc07_svm_on_features, Xtr, Ttr, Xte, Tte, classes, COSTS, cy, n_jobs=jobs)
    other = "float64" if CFG.svm.dtype == "float32" else "float32"
    alt, t_alt = timed(voc07_svm_on_features, Xtr, Ttr, Xte, Tte, classes, COSTS,
                       SVMParams.from_config({**CFG.svm, "dtype": other}), n_jobs=jobs)
    same, t_same = timed(voc07_svm_on_features, Xtr, Ttr, Xte, Tte, classes, COSTS,
                         SVMParams.from_config({**CFG.svm, "backend": "sklearn"}), n_jobs=jobs)
    ref, t_ref = timed(anchors_sklearn, Xtr, Ttr, Xte, Tte, COSTS, jobs)
    diff, speedup = abs(ours["mAP"] - ref), t_ref / t_ours
    print(f"{title}: {Xtr.shape[0]}+{Xte.shape[0]} x {Xtr.shape[1]}, {len(classes)} classes, {len(COSTS)} costs, "
          f"{jobs} processes (load average {os.getloadavg()[0]:.1f})")
    print(f"  cyanure path, {CFG.svm.dtype}  mAP {ours['mAP']:.3f}  {t_ours:7.1f}s  "
          f"(solves at max_iter: {ours['max_iter']})")
    print(f"  cyanure path, {other}  mAP {alt['mAP']:.3f}  {t_alt:7.1f}s  ({t_ref / t_alt:.2f}x the anchors)")
    print(f"  same pipeline, sklearn mAP {same['mAP']:.3f}  {t_same:7.1f}s")
    print(f"  sklearn anchors        mAP {ref:.3f}  {t_ref:7.1f}s")
    print(f"  |mAP diff| {diff:.3f} (target <= 0.1): {'PASS' if diff <= 0.1 else 'MISS'}; speedup {speedup:.2f}x "
          f"(target >= 5x): {'PASS' if speedup >= 5 else 'MISS'}")
    return diff, speedup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voc-n", type=int, default=1000)
    ap.add_argument("--ckpt", default="random:resnet18_small_w0.5")
    ap.add_argument("--synthetic", type=int, default=0)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-svm-") as tmp:
        Xtr, Ttr, Xte, Tte, classes = cached_features(args.ckpt, args.voc_n, Path(tmp))
    # start the worker processes (imports) before anything is timed
    voc07_svm_on_features(Xtr[:90], Ttr[:90], Xte, Tte, classes, [1.0], SVMParams.from_config(CFG.svm),
                          n_jobs=args.jobs)
    diff, speedup = compare(f"cached mini-VOC feature5 ({args.ckpt})", Xtr, Ttr, Xte, Tte, classes, args.jobs)
    if args.synthetic:
        Xtr, Ttr = voc_like(args.synthetic, args.dim, 0)
        Xte, Tte = voc_like(args.synthetic, args.dim, 1)
        compare("synthetic VOC-like", Xtr, Ttr, Xte, Tte, [f"class{c}" for c in range(Ttr.shape[1])], args.jobs)
    return 0 if diff <= 0.1 and speedup >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
