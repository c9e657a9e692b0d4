"""An independent float64 numpy reference of LogME (the naive algorithm, written with plain numpy.linalg).

It shares no code with jaxtransfer: explicit inverse for gamma, ``np.linalg.solve`` for m, ``slogdet`` for the
log determinant, and the two edge limits of the evidence evaluated from their definitions as Gaussian densities.
"""

import numpy as np


def _gaussian_loglik_per_sample(y, cov):
    """max over c of log N(y; 0, cov / c) / n."""
    n = y.shape[0]
    _sign, logdet = np.linalg.slogdet(cov)
    quad = y @ np.linalg.solve(cov, y)
    c = n / quad
    return (-0.5 * n * np.log(2 * np.pi) - 0.5 * (logdet - n * np.log(c)) - 0.5 * c * quad) / n


def evidence(f, y, *, tol=1e-3, max_iter=100):
    """Per-sample maximised log evidence of one target y (n,) on features f (n, D)."""
    f = np.asarray(f, np.float64)
    y = np.asarray(y, np.float64)
    n, d = f.shape
    g = f.T @ f
    b = n / (y @ y)  # start where jaxtransfer starts: b0 = n / y^T y, a0 = b0 tr(F^T F) / D
    a = b * np.trace(g) / d

    def fit(a, b):
        amat = a * np.eye(d) + b * g
        m = b * np.linalg.solve(amat, f.T @ y)
        return amat, m

    for _ in range(max_iter):
        if b * np.trace(g) > 1e10 * a:
            break  # A is numerically singular: the iterate is at the noise-free edge to working precision
        amat, m = fit(a, b)
        gamma = np.trace(b * g @ np.linalg.inv(amat))
        a_new = gamma / (m @ m)
        b_new = (n - gamma) / np.sum((f @ m - y) ** 2)
        if not (np.isfinite(a_new) and np.isfinite(b_new) and a_new > 0 and b_new > 0):
            break  # the iterate ran into the edge of the domain and lost precision: keep the last valid one
        done = abs(a_new / b_new - a / b) <= tol * (a / b)
        a, b = a_new, b_new
        if done:
            break
    amat, m = fit(a, b)
    _, logdet = np.linalg.slogdet(amat)
    interior = (
        0.5 * n * np.log(b)
        + 0.5 * d * np.log(a)
        - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * b * np.sum((f @ m - y) ** 2)
        - 0.5 * a * (m @ m)
        - 0.5 * logdet
    ) / n
    candidates = [interior, _gaussian_loglik_per_sample(y, np.eye(n))]  # a -> inf: w = 0
    if n <= d and np.linalg.cond(f @ f.T) < 1e10:  # b -> inf: noise-free interpolation
        candidates.append(_gaussian_loglik_per_sample(y, f @ f.T))
    return max(candidates)


def logme(f, labels=None, targets=None, **kw):
    if targets is None:
        labels = np.asarray(labels)
        targets = np.eye(labels.max() + 1)[labels]
    targets = np.asarray(targets, np.float64).reshape(len(f), -1)
    return float(np.mean([evidence(f, t, **kw) for t in targets.T]))
