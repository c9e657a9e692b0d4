"""An independent float64 reference of LogME: a brute-force global maximiser of L(a, b).

It shares no code and no algorithm with jaxtransfer: L(a, b) is evaluated from its definition (the two-parameter
evidence, not the one-parameter profile the library maximises) through an SVD of F in numpy, on a dense grid over
(log a, log b) that spans the whole eigenvalue range with a wide margin; the best grid cells are polished with
scipy's Nelder-Mead, and the two edge limits are evaluated from their definitions as Gaussian densities
(numpy.linalg.slogdet / solve). The maximum of all of these is returned.
"""

import warnings

import numpy as np
from scipy import optimize

_LOG_2PI = np.log(2 * np.pi)


def _gaussian_loglik_per_sample(y, cov):
    """max over c of log N(y; 0, cov / c) / n."""
    n = y.shape[0]
    _sign, logdet = np.linalg.slogdet(cov)
    quad = y @ np.linalg.solve(cov, y)
    c = n / quad
    return (-0.5 * n * _LOG_2PI - 0.5 * (logdet - n * np.log(c)) - 0.5 * c * quad) / n


def _evidence_function(f, y):
    """L(log a, log b) / n, vectorised over arrays of log a and log b."""
    n, d = f.shape
    u, sv, _ = np.linalg.svd(f, full_matrices=False)
    s = sv**2  # the min(n, D) eigenvalues of F^T F that can be non-zero; the other D - len(s) are 0
    p = u.T @ y
    yy = y @ y
    y_perp = max(yy - p @ p, 0.0)  # the part of y outside the column space of F

    def value(la, lb):
        la, lb = np.asarray(la, float)[..., None], np.asarray(lb, float)[..., None]
        a, b = np.exp(la), np.exp(lb)
        shrink = a / (a + b * s)  # 1 - b s / (a + b s)
        res = np.sum(p**2 * shrink**2, axis=-1) + y_perp  # ||F m - y||^2, m = b A^-1 F^T y
        mm = np.sum(s * p**2 * (b / (a + b * s)) ** 2, axis=-1)
        logdet = np.sum(np.log(a + b * s), axis=-1) + (d - len(s)) * la[..., 0]
        a, b, la, lb = a[..., 0], b[..., 0], la[..., 0], lb[..., 0]
        return (0.5 * n * lb + 0.5 * d * la - 0.5 * n * _LOG_2PI - 0.5 * b * res - 0.5 * a * mm - 0.5 * logdet) / n

    return value, s, yy, y_perp


def evidence(f, y, *, grid=(400, 120), polish=6):
    """Per-sample maximised log evidence of one target y (n,) on features f (n, D), float64."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the grid's corners overflow; those cells are simply not candidates
        return _evidence(f, y, grid=grid, polish=polish)


def _evidence(f, y, *, grid, polish):
    f = np.asarray(f, np.float64)
    y = np.asarray(y, np.float64)
    n, d = f.shape
    value, s, yy, y_perp = _evidence_function(f, y)
    s_pos = s[s > s.max() * 1e-13] if s.max() > 0 else np.array([1.0])
    # The evidence's interesting region: a / b within the eigenvalue range (wide margin), b between the null
    # value n / y^T y and n / (least-squares residual).
    lt = np.linspace(np.log(s_pos.min()) - 25, np.log(s_pos.max()) + 25, grid[0])
    lb_lo = np.log(n / yy) - 6
    lb_hi = np.log(n / max(y_perp, 1e-10 * yy)) + 6
    lb = np.linspace(lb_lo, lb_hi, grid[1])
    lt_g, lb_g = np.meshgrid(lt, lb, indexing="ij")
    vals = value(lt_g + lb_g, lb_g)
    vals = np.where(np.isfinite(vals), vals, -np.inf)
    order = np.argsort(vals, axis=None)[::-1]
    candidates = []
    seen = []
    for i in order:
        if len(seen) >= polish:
            break
        ti, bi = np.unravel_index(i, vals.shape)
        if any(abs(ti - tj) <= 3 and abs(bi - bj) <= 3 for tj, bj in seen):
            continue
        seen.append((ti, bi))
        x0 = np.array([lt_g[ti, bi] + lb_g[ti, bi], lb_g[ti, bi]])
        out = optimize.minimize(
            lambda x: -float(value(x[0], x[1])),
            x0,
            method="Nelder-Mead",
            options={"xatol": 1e-11, "fatol": 1e-15, "maxiter": 4000, "maxfev": 8000},
        )
        candidates.append(-out.fun)
    candidates.append(_gaussian_loglik_per_sample(y, np.eye(n)))  # a -> inf: w = 0
    if n <= d and np.linalg.cond(f @ f.T) < 1e10:  # b -> inf: noise-free interpolation
        candidates.append(_gaussian_loglik_per_sample(y, f @ f.T))
    return float(max(candidates))


def logme(f, labels=None, targets=None, **kw):
    if targets is None:
        labels = np.asarray(labels)
        targets = np.eye(labels.max() + 1)[labels]
    targets = np.asarray(targets, np.float64).reshape(len(f), -1)
    return float(np.mean([evidence(f, t, **kw) for t in targets.T]))
