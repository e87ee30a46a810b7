"""L2-regularized logistic regression by L-BFGS: scikit-learn's on a CPU, the same objective in torch on a GPU.

Both minimize scikit-learn's ``LogisticRegression(penalty="l2", C)`` objective, ``C * sum_i loss_i + ||W||^2 / 2``
(the intercept unpenalized): multinomial cross-entropy for several classes, the binary log-loss with one weight
vector for two. The torch solver states it scaled by ``1 / (C n)`` (the same minimizer; scikit-learn scales it
so too) and stops, as scikit-learn's L-BFGS does, when the largest gradient entry falls below ``tol`` or after
``max_iter`` iterations; its L-BFGS keeps scikit-learn's 10 correction pairs and takes strong-Wolfe steps.
``tests/test_transfer_solver.py`` holds the two to the same coefficients and accuracy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


@dataclass
class Linear:
    """Coefficients ``(K, D)``, intercepts ``(K,)`` and the label of each row; ``K == 1`` for a binary problem
    (scores of the second label). scikit-learn fits only the labels present in training, so a row's label is
    kept with it rather than assumed to be its index."""

    coef: np.ndarray
    intercept: np.ndarray
    labels: np.ndarray

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=self.coef.dtype) @ self.coef.T + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        s = self.scores(x)
        return self.labels[(s[:, 0] > 0).astype(int)] if len(self.coef) == 1 else self.labels[s.argmax(1)]


def fit_sklearn(x: np.ndarray, y: np.ndarray, C: float, *, max_iter: int, tol: float,
                init: Optional[Linear] = None) -> Linear:
    """scikit-learn's L-BFGS fit (warm-started from ``init`` where given, as ``warm_start=True`` does)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=init is not None)
    if init is not None:
        clf.coef_, clf.intercept_ = init.coef.copy(), init.intercept.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the source's grid stops at max_iter as well
        clf.fit(x, y)
    return Linear(clf.coef_.copy(), clf.intercept_.copy(), clf.classes_.copy())


def fit_torch(x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float, *, max_iter: int, tol: float,
              init: Optional[Linear] = None) -> Linear:
    """The same fit by ``torch.optim.LBFGS`` on ``x``'s device and dtype; ``y`` holds labels 0..K-1."""
    k = 1 if num_classes == 2 else num_classes
    w = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    b = torch.zeros(k, dtype=x.dtype, device=x.device)
    if init is not None:
        w.copy_(torch.as_tensor(init.coef, dtype=x.dtype)), b.copy_(torch.as_tensor(init.intercept, dtype=x.dtype))
    w.requires_grad_(True), b.requires_grad_(True)
    reg = 1.0 / (2.0 * C * len(x))
    target = y.to(x.dtype) if k == 1 else y.long()
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = x @ w.T + b
        if k == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)
        else:
            loss = torch.nn.functional.cross_entropy(logits, target)
        loss = loss + reg * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Linear(w.detach().cpu().numpy(), b.detach().cpu().numpy(), np.arange(num_classes))


class Solver:
    """One solver over a grid of costs: the features moved to the device once, each fit warm-started from the
    previous one's coefficients when ``warm_start``."""

    def __init__(self, kind: str, device: str, *, max_iter: int, tol: float, warm_start: bool, dtype: str):
        if kind == "auto":
            kind = "torch" if str(device).startswith("cuda") else "sklearn"
        self.kind, self.device, self.max_iter, self.tol, self.warm = kind, device, max_iter, tol, warm_start
        self.dtype = getattr(torch, dtype)

    def path(self, x: np.ndarray, y: np.ndarray, costs, num_classes: int):
        """``[Linear per cost]`` fitted on ``(x, y)``, in the order of ``costs``."""
        xt = torch.tensor(np.asarray(x), dtype=self.dtype, device=self.device) \
            if self.kind == "torch" else None  # a copy: the cache's memory maps are read-only
        yt = torch.as_tensor(y, device=self.device) if self.kind == "torch" else None
        out, prev = [], None
        for C in costs:
            init = prev if self.warm else None
            if self.kind == "torch":
                prev = fit_torch(xt, yt, num_classes, float(C), max_iter=self.max_iter, tol=self.tol, init=init)
            else:
                prev = fit_sklearn(x, y, float(C), max_iter=self.max_iter, tol=self.tol, init=init)
            out.append(prev)
        return out
