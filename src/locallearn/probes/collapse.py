"""Neural collapse NC1-NC4 of last-layer features (Papyan, Han & Donoho, PNAS 2020).

Notation of the paper (section "Results", figures 2-7): h_i the features of sample i (the
input of the final linear classifier), y_i its class, mu_c the mean of class c, mu_G the
global mean of all features, W (C x p) the classifier's weight rows w_c.

    Sigma_W = Ave_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T     within-class covariance
    Sigma_B = Ave_c (mu_c - mu_G)(mu_c - mu_G)^T            between-class covariance
    NC1 = Tr(Sigma_W Sigma_B^+) / C                         (fig. 6)
    NC2 equinorm  = Std_c ||mu_c - mu_G|| / Ave_c ||mu_c - mu_G||            (fig. 2)
    NC2 equiangle = Ave_{c != c'} |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|  (fig. 4)
    NC3 = || W / ||W||_F - M / ||M||_F ||_F^2,  M rows mu_c - mu_G           (fig. 5)
    NC4 = share of samples where the network's prediction differs from the
          nearest class mean argmin_c ||h_i - mu_c||                          (fig. 7)

Choices the paper leaves open, fixed here: Std is the population standard deviation over
classes (ddof 0); mu_G is the mean of all samples (equal to the mean of class means when the
classes are balanced, as in the paper's data); the pseudo-inverse drops singular values of M
below max(C, p) * eps * s_max, which removes the one null direction that centring creates;
the classifier's bias is not part of NC3 (the paper's W has none). NC2 is also given for the
classifier rows w_c (uncentred), as the paper plots both.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def class_means(
    features: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes present, their means (C, p), global mean (p,)), in float64."""
    h = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    means = np.stack([h[y == c].mean(axis=0) for c in classes])
    return classes, means, h.mean(axis=0)


def nc1(features: np.ndarray, labels: np.ndarray) -> float:
    """Tr(Sigma_W Sigma_B^+) / C: within-class spread measured in units of the spread of the
    class means; 0 when every sample sits on its class mean."""
    h = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    classes, means, mu_g = class_means(h, y)
    c = len(classes)
    if c < 2:
        raise ValueError("NC1 needs at least two classes")
    index = np.searchsorted(classes, y)
    within = h - means[index]  # (N, p)
    centred = means - mu_g  # (C, p) = M
    # Sigma_B = M^T M / C = V diag(s^2 / C) V^T, so Sigma_B^+ = C V diag(1 / s^2) V^T on the
    # kept directions and Tr(Sigma_W Sigma_B^+) / C = sum_k v_k^T Sigma_W v_k / s_k^2.
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s > max(centred.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    if not keep.any():
        return float("inf")  # all class means coincide: no between-class spread at all
    projected = within @ vt[keep].T  # (N, rank)
    sigma_w_diag = (projected**2).mean(axis=0)  # v_k^T Sigma_W v_k
    return float((sigma_w_diag / s[keep] ** 2).sum())


def _equinorm(vectors: np.ndarray) -> float:
    norms = np.linalg.norm(vectors, axis=1)
    return float(norms.std() / norms.mean()) if norms.mean() > 0 else float("nan")


def _equiangle(vectors: np.ndarray) -> float:
    c = vectors.shape[0]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    cos = unit @ unit.T
    off = ~np.eye(c, dtype=bool)
    return float(np.abs(cos[off] + 1.0 / (c - 1)).mean())


def nc2(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Equinorm and equiangularity of the centred class means (0 and 0 for a simplex ETF)."""
    classes, means, mu_g = class_means(features, labels)
    if len(classes) < 2:
        raise ValueError("NC2 needs at least two classes")
    centred = means - mu_g
    return {"equinorm": _equinorm(centred), "equiangle": _equiangle(centred)}


def nc3(features: np.ndarray, labels: np.ndarray, weight: np.ndarray) -> float:
    """|| W/||W|| - M/||M|| ||_F^2 between the classifier rows and the centred class means
    (rows of W in the order of the sorted class labels present)."""
    classes, means, mu_g = class_means(features, labels)
    w = np.asarray(weight, dtype=np.float64)[classes]
    m = means - mu_g
    return float(np.sum((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2))


def ncc_predict(features: np.ndarray, means: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Nearest-class-mean prediction argmin_c ||h - mu_c|| (Euclidean)."""
    h = np.asarray(features, dtype=np.float64)
    # ||h - mu||^2 = ||h||^2 - 2 h.mu + ||mu||^2; ||h||^2 is the same for every class.
    dist = -2.0 * h @ means.T + (means**2).sum(axis=1)
    return classes[dist.argmin(axis=1)]


def nc4(
    features: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    query: np.ndarray | None = None,
) -> float:
    """Share of samples whose network prediction differs from the nearest-class-mean rule.

    Class means come from (``features``, ``labels``); the comparison is made on ``query``
    features (default: the same features), whose network predictions are ``predictions``.
    """
    classes, means, _ = class_means(features, labels)
    h = features if query is None else query
    return float((ncc_predict(h, means, classes) != np.asarray(predictions)).mean())


def neural_collapse(
    features: np.ndarray,
    labels: np.ndarray,
    weight: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
) -> dict[str, Any]:
    """NC1-NC4 (and NC2 of the classifier rows) as one dict; NC3 needs ``weight`` (C x p)
    and NC4 ``predictions``, else they are None."""
    out: dict[str, Any] = {"nc1": nc1(features, labels)}
    two = nc2(features, labels)
    out["nc2_equinorm"], out["nc2_equiangle"] = two["equinorm"], two["equiangle"]
    out["nc2_w_equinorm"] = out["nc2_w_equiangle"] = out["nc3"] = out["nc4"] = None
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        out["nc2_w_equinorm"], out["nc2_w_equiangle"] = _equinorm(w), _equiangle(w)
        out["nc3"] = nc3(features, labels, w)
    if predictions is not None:
        out["nc4"] = nc4(features, labels, predictions)
    return out
