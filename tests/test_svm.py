"""VOC07 SVM and low-shot SVM: solver equivalence (cyanure vs scikit-learn), protocol details, bad input,
and both evaluators end to end on the embedded mini-VOC."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from checkpoint_builders import DEMO_ARCH

from moco_bench import evaluators
from moco_bench.convert import load_backbone
from moco_bench.core import native_output
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.engine.runner import check_config
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.frozen.lowshot import lowshot_on_features, sample_lowshot
from moco_bench.evaluators.frozen.svm import (
    CYANURE_UNSTABLE,
    SVMParams,
    _train_labels,
    fit_path,
    l2_normalize,
    voc07_svm_on_features,
)

EVALUATE = Path(__file__).resolve().parent.parent / "evaluate"


def params(**changes) -> SVMParams:
    """The protocol's SVM settings (evaluate/voc07_svm.yaml), with ``changes``."""
    return dataclasses.replace(SVMParams.from_config(load_evaluation(EVALUATE / "voc07_svm.yaml").svm), **changes)


def voc_like(n, d=48, classes=4, seed=0):
    """Multi-label non-negative features (class prototypes + shared factors + noise, as pooled ReLU maps are)
    with VOC's 1/-1/0 targets, a few positives difficult. The geometry is shared between seeds (splits)."""
    rng, geometry = np.random.default_rng(seed), np.random.default_rng(99)
    protos = np.abs(geometry.standard_normal((classes, d))) * (geometry.random((classes, d)) < 0.3) * 2
    factors = geometry.standard_normal((8, d))
    present = rng.random((n, classes)) < np.linspace(0.15, 0.4, classes)
    x = present @ protos + rng.standard_normal((n, 8)) @ factors * 0.6 + rng.standard_normal((n, d)) + 0.5
    targets = np.where(present, 1.0, -1.0).astype(np.float32)
    targets[present & (rng.random((n, classes)) < 0.05)] = 0.0
    return np.maximum(x, 0).astype(np.float32), targets


def test_configs_load_with_the_protocol_grids():
    mm = load_evaluation(EVALUATE / "voc07_svm.yaml")
    assert len(mm.svm.costs) == 19 and [float(c) for c in mm.svm.costs[:4]] == [1.0, 10.0, 100.0, 0.5 ** 4]
    assert float(mm.svm.costs[-1]) == 0.5 ** 19
    assert [float(c) for c in load_evaluation(EVALUATE / "voc07_svm_vissl.yaml").svm.costs] == \
        [0.01, 0.1, 1, 2, 5, 10, 15, 20, 50, 100, 1000]
    p = SVMParams.from_config(mm.svm)
    assert (p.backend, p.positive_weight, p.cv_folds, p.max_iter) == ("cyanure", 2.0, 3, 2000)
    low = load_evaluation(EVALUATE / "voc07_lowshot_svm.yaml")
    assert list(low.lowshot.k) == [1, 2, 4, 8, 16, 32, 64, 96] and len(low.lowshot.seeds) == 5
    for key in ("data", "transform", "features", "svm"):  # the low-shot file repeats voc07_svm's blocks
        assert low[key] == mm[key], key
    demo = load_evaluation(EVALUATE / "demo/voc07_svm.yaml")
    demo_low = load_evaluation(EVALUATE / "demo/voc07_lowshot_svm.yaml")
    for key in ("data", "transform", "features", "svm"):
        assert demo[key] == demo_low[key], key


def test_cyanure_solves_the_class_weighted_linearsvc_objective():
    """lambda = 1/(2 C n), duplicated positives and a constant feature for the intercept minimize LinearSVC(C,
    class_weight {1: 2, -1: 1})'s objective 0.5 (|w|^2 + b^2) + C sum_i cw_i max(0, 1 - y_i (w.x_i + b))^2:
    checked against scipy's L-BFGS on that objective and against liblinear's solution."""
    from scipy.optimize import minimize
    from sklearn.svm import LinearSVC

    X, T = voc_like(200)
    X = l2_normalize(X, 1e-5)
    y = np.where(T[:, 1] > 0, 1, -1)
    cw = np.where(y > 0, 2.0, 1.0)

    def objective(v, cost):
        margin = np.maximum(0, 1 - y * (X @ v[:-1] + v[-1]))
        grad_f = -2 * cost * cw * margin * y
        return 0.5 * v @ v + cost * np.sum(cw * margin ** 2), v + np.r_[X.T @ grad_f, grad_f.sum()]

    for cost in (0.1, 1.0):
        ref = minimize(objective, np.zeros(X.shape[1] + 1), args=(cost,), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-10}).x
        (w, b), = fit_path(X, y, [cost], params(cyanure_tol=1e-6))
        np.testing.assert_allclose(np.r_[w, b], ref, atol=1e-3 * np.abs(ref).max())
        lib = LinearSVC(C=cost, class_weight={1: 2, -1: 1}, tol=1e-6, max_iter=100000, dual=True).fit(X, y)
        np.testing.assert_allclose(np.r_[w, b], np.r_[lib.coef_.ravel(), lib.intercept_], atol=2e-3 * np.abs(ref).max())


def test_warm_started_path_equals_separate_solves():
    X, T = voc_like(150)
    X = l2_normalize(X, 1e-5)
    y = np.where(T[:, 0] > 0, 1, -1)
    p = params(cyanure_tol=1e-6)
    costs = [10.0, 0.01, 1.0]  # out of order on purpose
    path = fit_path(X, y, costs, p)
    for cost, (w, b) in zip(costs, path):
        (w1, b1), = fit_path(X, y, [cost], p)
        np.testing.assert_allclose(w, w1, atol=1e-3 * np.abs(w1).max())
        assert b == pytest.approx(b1, abs=1e-3 * np.abs(w1).max())


def test_cyanure_instability_warnings_are_counted_not_printed(capfd):
    """cyanure's C++ solver writes "prone to numerical instability" (ANSI-coloured) to file descriptor 2 when a
    duality gap stalls at round-off: counted per solve path, never printed; any other line it writes passes on."""
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(300, 512)))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(300) > 0.8, 1, -1).astype(np.int32)
    stats = {}
    fit_path(X, y, [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0], params(positive_weight=1.0, cyanure_tol=1e-8), stats)
    assert stats["unstable"] >= 1 and stats["solves"] == 6
    assert "instability" not in capfd.readouterr().err
    with native_output.captured() as lines:
        os.write(2, f"\x1b[33mWarning : {CYANURE_UNSTABLE}. It would be safer to use double.\x1b[0m\nother\n".encode())
    assert lines[0] == f"Warning : {CYANURE_UNSTABLE}. It would be safer to use double." and lines[1] == "other"
    assert native_output.forward_except(lines, CYANURE_UNSTABLE) == 1 and capfd.readouterr().err == "other\n"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_voc07_protocol_cyanure_equals_sklearn_within_0_1_map(seed):
    """The whole protocol (cross-validated costs, refit, test AP) with either solver: the same objective,
    solved to different tolerances."""
    Xtr, Ttr = voc_like(400, seed=seed)
    Xte, Tte = voc_like(400, seed=seed + 100)
    classes = ["a", "b", "c", "d"]
    costs = [float(c) for c in load_evaluation(EVALUATE / "voc07_svm.yaml").svm.costs]
    cy = voc07_svm_on_features(Xtr, Ttr, Xte, Tte, classes, costs, params(backend="cyanure"))
    sk = voc07_svm_on_features(Xtr, Ttr, Xte, Tte, classes, costs, params(backend="sklearn"))
    assert set(cy["ap"]) == set(classes) and 50 < cy["mAP"] <= 100
    assert abs(cy["mAP"] - sk["mAP"]) < 0.1
    assert all(c in costs for c in cy["cost"].values())
    assert all(len(v) == len(costs) for v in cy["cv_ap"].values())


def test_difficult_examples_in_training_follow_the_config():
    t = np.array([1, 0, -1, 1], dtype=np.float32)
    rows, y = _train_labels(t, params(difficult_in_train="negative"))
    assert rows.tolist() == [0, 1, 2, 3] and y.tolist() == [1, -1, -1, 1]
    rows, y = _train_labels(t, params(difficult_in_train="ignore"))
    assert rows.tolist() == [0, 2, 3] and y.tolist() == [1, -1, 1]


def test_bad_inputs_are_named():
    Xtr, Ttr = voc_like(90, seed=1)
    Xte, Tte = voc_like(90, seed=2)
    p, costs = params(), [1.0]
    bad = Xtr.copy()
    bad[[5, 17]] = np.nan
    images = ([f"img{i}.jpg" for i in range(90)], [f"test{i}.jpg" for i in range(90)])
    with pytest.raises(DataError, match=r"2 image\(s\).*img5\.jpg, img17\.jpg"):
        voc07_svm_on_features(bad, Ttr, Xte, Tte, list("abcd"), costs, p, images=images)
    no_pos = Tte.copy()
    no_pos[no_pos[:, 2] > 0, 2] = -1
    with pytest.raises(DataError, match="test split: no positive example of class.*c"):
        voc07_svm_on_features(Xtr, Ttr, Xte, no_pos, list("abcd"), costs, p)
    few = Ttr.copy()
    few[np.flatnonzero(few[:, 0] > 0)[2:], 0] = -1  # 2 positives: 3-fold cross-validation impossible
    with pytest.raises(DataError, match="class 'a': 2 positive"):
        voc07_svm_on_features(Xtr, few, Xte, Tte, list("abcd"), costs, p)
    with pytest.raises(ConfigError, match="whole number"):
        SVMParams.from_config({**load_evaluation(EVALUATE / "voc07_svm.yaml").svm, "class_weight":
                               {"positive": 1.5, "negative": 1}})


def test_lowshot_samples_per_class():
    t = np.array([1] * 10 + [-1] * 50 + [0] * 5, dtype=np.float32)
    rows = sample_lowshot(t, 4, 36, np.random.default_rng([1, 4]), "cat")
    assert len(rows) == 40 and (t[rows] > 0).sum() == 4 and (t[rows] < 0).sum() == 36 and (t[rows] != 0).all()
    assert rows.tolist() == sample_lowshot(t, 4, 36, np.random.default_rng([1, 4]), "cat").tolist()
    with pytest.raises(DataError, match="k larger than the training set"):
        sample_lowshot(t, 11, 19, np.random.default_rng(0), "cat")
    with pytest.raises(DataError, match="k larger than the training set"):
        sample_lowshot(t, 4, 76, np.random.default_rng(0), "cat")


@pytest.mark.parametrize("selection", ["cv", "test"])
def test_lowshot_statistics(selection):
    Xtr, Ttr = voc_like(200, seed=1)
    Xte, Tte = voc_like(120, seed=2)
    res = lowshot_on_features(Xtr, Ttr, Xte, Tte, list("abcd"), [0.01, 1.0, 100.0], params(), ks=[1, 2, 4],
                              seeds=[1, 2, 3], negatives_per_positive=None, selection=selection)
    assert res["selection"] == selection and list(res["k"]) == [1, 2, 4]
    for r in res["k"].values():
        assert len(r["per_seed"]) == 3
        assert r["min"] <= r["mean"] <= r["max"] and r["std"] == pytest.approx(np.std(r["per_seed"]))
    if selection == "cv":
        assert res["k"][1]["borrowed_from_k"] == 2 and res["k"][2]["borrowed_from_k"] is None
        assert res["k"][1]["cost"] == res["k"][2]["cost"]  # k=1 takes each class's cost chosen at k=2
    else:
        assert len(res["k"][4]["test_map_per_cost"]) == 3 and res["k"][4]["cost"] in (0.01, 1.0, 100.0)


def test_voc07_svm_and_lowshot_end_to_end(minivoc_root, tmp_path):
    backbone = load_backbone(f"random:{DEMO_ARCH}")
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=1)
    cfg = load_evaluation(EVALUATE / "demo/voc07_svm.yaml", [f"data.root={minivoc_root}"])
    out = evaluators.get("voc07_svm")(backbone, cfg, ctx)
    assert set(out.metrics) == {"mAP"} and 0 < out.metrics["mAP"] <= 100
    assert set(out.details["feature5"]["per_class_ap"]) == set(cfg.data.classes)
    assert out.info["layer"] == "feature5" and out.info["feature_cache"]["train"] == {"feature5": "miss"}
    solves = out.details["solves"]  # 10 classes x (3 folds + 1 refit) x 19 costs, warm-started in order
    assert solves["solves"] >= 10 * 3 * 19 and solves["numerical_instability_warnings"] >= 0
    cfg = load_evaluation(EVALUATE / "demo/voc07_lowshot_svm.yaml",
                      [f"data.root={minivoc_root}", "lowshot.k=[1,2]", "lowshot.seeds=[1,2]"])
    out = evaluators.get("voc07_lowshot_svm")(backbone, cfg, ctx)
    assert set(out.metrics) == {f"mAP@k{k}{s}" for k in (1, 2) for s in ("", "_min", "_max", "_std")}
    assert out.per_seed["mAP@k2"] and len(out.per_seed["mAP@k2"]) == 2
    assert {"solves", "solves_at_max_iter", "numerical_instability_warnings"} <= set(out.details)
    assert out.info["cost_selection"] == "cv" and "cross-validation" in out.info["variant"]
    assessment = check_config(cfg)  # cross-validated costs are not the published rule: not comparable
    assert assessment["comparable"] is False and "lowshot.cost_selection" in assessment["unmet"]
    assert out.info["feature_cache"]["test"] == {"feature5": "hit"}
