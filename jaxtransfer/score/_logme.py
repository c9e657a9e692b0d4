"""LogME: the logarithm of the maximum evidence of a Bayesian linear model on frozen features.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021.

For every target column y_k of Y (one-hot class indicators, or regression targets) a linear model with an
isotropic Gaussian prior w ~ N(0, a^-1 I) and Gaussian noise of precision b is fitted to the features F (n, D) by
maximising its log evidence L_k(a, b) over (a, b); LogME is (1/K) sum_k L_k / n. Higher means the features
explain the targets better with less tuning: a better model to transfer. See ``_evidence.py`` for the evidence,
``_profile.py`` for its global maximisation over a / b, ``_logme_optimized.py`` and ``_logme_naive.py`` for the
two algorithms, and ``_blocked.py`` for the row-block moments that in-memory input with n > D goes through (one
compilation per (D, K) whatever n is; half of the Gram matrix, ``_gram.py``).

Precision: in float64 (``jax.config.update("jax_enable_x64", True)`` and float64 inputs) both methods agree
with a brute-force float64 maximiser to ~1e-12 relative (tested at 1e-7). In float32 the optimised method stays
within ~1e-4 relative of float64 on realistic features (see README for the measured figures); the Gram matrix and
the eigendecomposition are the float32 bottleneck.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer import _checks
from jaxtransfer.score._blocked import blocked_evidence
from jaxtransfer.score._evidence import LogMEEvidence, check_result
from jaxtransfer.score._logme_naive import naive_evidence
from jaxtransfer.score._logme_optimized import optimized_evidence
from jaxtransfer.score._registry import register_score
from jaxtransfer.score._stats import logme_from_stats
from jaxtransfer.score._targets import Dense, OneHot

__all__ = ["LogME", "LogMEEvidence", "logme", "logme_evidence"]

_ALGORITHMS = {"optimized": optimized_evidence, "naive": naive_evidence}


@functools.partial(jax.jit, static_argnames=("num_classes", "method", "max_iter"))
def _classification(features, labels, tol, *, num_classes, method, max_iter):
    return _ALGORITHMS[method](features, OneHot(labels, num_classes), tol=tol, max_iter=max_iter)


@functools.partial(jax.jit, static_argnames=("method", "max_iter"))
def _regression(features, targets, tol, *, method, max_iter):
    return _ALGORITHMS[method](features, Dense(targets), tol=tol, max_iter=max_iter)


def _fit(features, labels, regression, num_classes, tol, max_iter, method, *, weights) -> LogMEEvidence:
    """Checks the inputs and runs the chosen algorithm; ``weights=False`` may leave ``weights`` as ``None``.

    Host input (numpy, or jax arrays on the CPU; not traced) with n > D and the optimised method takes the
    row-block path (``_blocked``): checked on the host and compiled once per (D, K), whatever n is. Traced input
    (inside the caller's ``jit`` or ``vmap``), arrays already on an accelerator (no round trip to the host), n <= D
    and the naive method run one jit-compiled function of the whole matrix.
    """
    _checks.check_flag(regression, "regression")
    if method == "optimized" and _checks.in_host_memory(features) and _checks.in_host_memory(labels):
        features = _checks.as_array(features, "features")  # no copy of an array; a list is converted once
        n, d = features.shape if features.ndim == 2 else (0, 0)
        if n > d:
            _checks.check_iteration(tol, max_iter)
            host, dtype, top = _checks.host_features(features)
            y, c = _checks.check_logme_labels(labels, n, regression, num_classes, host=True)
            exponent = int(np.frexp(top)[1])
            result = blocked_evidence(host, dtype, exponent, y, c, tol=tol, max_iter=max_iter, weights=weights)
            return _unscaled(result, jnp.ldexp(jnp.ones((), dtype), exponent), max_iter, method)
    f, y, c = _checks.check_logme_inputs(features, labels, regression, num_classes, tol, max_iter, method)
    tol = jnp.asarray(tol, f.dtype)
    # The maximised evidence is invariant to the feature scale; dividing by a power of two is exact, so the
    # score is the same at every finite scale and F^T F can neither overflow nor underflow (e.g. at 1e+-10 in
    # float32). The weights and alpha are mapped back: F m = (F / s)(s m), and a' = a / s^2 for the scaled F.
    scaled, scale = _checks.power_of_two_rescale(f)
    if c is None:
        result = _regression(scaled, y, tol, method=method, max_iter=max_iter)
    else:
        result = _classification(scaled, y, tol, num_classes=c, method=method, max_iter=max_iter)
    return _unscaled(result, scale, max_iter, method)


def _unscaled(result: LogMEEvidence, scale, max_iter: int, method: str) -> LogMEEvidence:
    """The result for F from that for F / scale (weights times 1 / scale, alpha times scale^2), checked."""
    weights = None if result.weights is None else result.weights / scale
    result = dataclasses.replace(result, weights=weights, alpha=result.alpha * scale**2)
    check_result(result, max_iter, method, stacklevel=5)
    return result


def logme_evidence(
    features,
    labels,
    *,
    regression: bool = False,
    num_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    method: str = "optimized",
) -> LogMEEvidence:
    """Per-target maximised log evidence, with the fitted a, b and posterior mean weights.

    Args:
        features: (n, D) real features of the target data set, e.g. a frozen backbone's penultimate layer.
        labels: classification (default): (n,) integer class ids in [0, C), each class one one-hot target
            column. With ``regression=True``: (n,) or (n, K) real targets.
        regression: treat ``labels`` as real-valued targets.
        num_classes: C, if not ``max(labels) + 1`` (required when labels are traced under ``jax.jit``).
        tol: locate the maximum to a relative ``tol`` in a / b (the bracket width in log(a / b); 1e-3 as the
            published stopping rule; the value is then within ~1e-8 relative of the maximum).
        max_iter: cap on the golden-section steps per target; a ``RuntimeWarning`` names the targets that hit it.
        method: ``"optimized"`` (one eigendecomposition, O(D) per target and evaluation) or ``"naive"``
            (a Cholesky factorisation per evaluation, O(D^3)). Both return the global maximum.

    Compilation: with the optimised method, host input (numpy, or jax arrays on the CPU) with n > D is checked on
    the host and reduced to its centred moments over blocks of 2048 rows (the last one padded to a power of two and
    masked), so calls with n = 9999, 10000 and 10001 share one compilation per (D, K); the checks and the blocking
    cost no copy of a float32 input. Traced input (inside your ``jax.jit`` / ``jax.vmap``), arrays on an
    accelerator and n <= D compile per shape.

    Returns:
        A :class:`LogMEEvidence` with ``evidence`` (K,) = L_k / n, ``alpha``, ``beta`` (K,), ``weights`` (K, D),
        ``num_iter``, ``converged`` and ``exact_fit`` (K,).

    Warns:
        RuntimeWarning: a target that the features fit exactly (unbounded evidence; ``exact_fit``), or one whose
            search hit ``max_iter``.

    Raises:
        TypeError: features or targets that are not real numbers; class labels that are not integers.
        ValueError: NaN/Inf, wrong shapes, mismatched n, fewer than 2 samples, negative or out-of-range class
            ids, a class without samples, an identically zero regression target, a bad option.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer import logme_evidence
        >>> f = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.8]])
        >>> logme_evidence(f, jnp.array([0, 0, 1, 1])).evidence.shape
        (2,)
    """
    return _fit(features, labels, regression, num_classes, tol, max_iter, method, weights=True)


@register_score(
    regression=True,
    from_stats=logme_from_stats,
    reference="You, Liu, Wang and Long, ICML 2021",
    units="mean log evidence per sample",
)
def logme(
    features,
    labels,
    *,
    regression: bool = False,
    num_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    method: str = "optimized",
) -> jax.Array:
    """LogME transferability score: mean over targets of the maximised log evidence per sample.

        LogME(F, Y) = (1/K) sum_k max_{a, b} L_k(a, b) / n

    Higher is better. Classification scores typically lie in about [-2, 2]; they are comparable between feature
    sets of different widths D on the same labels, not between data sets.

    Args and Raises: as :func:`logme_evidence`.

    Returns:
        A scalar ``jax.Array`` (float32, or float64 under x64).

    Example:
        >>> import numpy as np
        >>> from jaxtransfer import logme
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 200)
        >>> good = np.eye(3)[y] + 0.1 * rng.normal(size=(200, 3))
        >>> bad = np.eye(3)[y] + 3.0 * rng.normal(size=(200, 3))
        >>> bool(logme(good, y) > logme(bad, y))
        True
    """
    return jnp.mean(_fit(features, labels, regression, num_classes, tol, max_iter, method, weights=False).evidence)


class LogME:
    """Estimator interface: ``fit`` scores the features and keeps the posterior mean weights for ``predict``.

    ``fit(features, labels)`` returns the LogME score as a float, as the published implementation's ``LogME.fit``
    does (so code written for it runs unchanged; ``fit`` therefore does not return ``self`` and does not chain).
    The rest follows scikit-learn's estimator protocol, so that ``sklearn.base.clone``, ``cross_val_score`` and
    ``GridSearchCV`` take it: the constructor's keywords are its parameters (``get_params`` / ``set_params``,
    checked when ``fit`` runs), fitted state ends in ``_`` (``result_``, ``score_``), and ``score(features, labels)``
    is the posterior-mean linear predictor's accuracy (classification) or R^2 (regression) on held-out data, the
    number scikit-learn's model selection maximises. (The LogME value itself is what ``fit`` returns.)

    Args:
        regression: real-valued targets (n,) or (n, K) instead of class ids.
        num_classes, tol, max_iter, method: as in :func:`logme_evidence`.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer import LogME
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 100)
        >>> f = np.eye(3)[y] + 0.1 * rng.normal(size=(100, 3))
        >>> est = LogME()
        >>> score = est.fit(f, y)
        >>> bool((est.predict(f) == y).mean() > 0.9), est.score(f, y) > 0.9
        (True, True)
        >>> LogME(tol=1e-4).set_params(method="naive")
        LogME(tol=0.0001, method='naive')
    """

    _PARAMS = ("regression", "num_classes", "tol", "max_iter", "method")

    def __init__(
        self,
        regression: bool = False,
        *,
        num_classes: int | None = None,
        tol: float = 1e-3,
        max_iter: int = 100,
        method: str = "optimized",
    ):
        self.regression = regression
        self.num_classes = num_classes
        self.tol = tol
        self.max_iter = max_iter
        self.method = method

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's keywords and their current values (scikit-learn's protocol; ``deep`` is unused)."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params) -> LogME:
        """Sets constructor keywords (validated at the next ``fit``); returns ``self``."""
        unknown = sorted(set(params) - set(self._PARAMS))
        if unknown:
            raise ValueError(f"LogME has no parameter(s) {unknown}; its parameters are {list(self._PARAMS)}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags (imported only when scikit-learn asks): a classifier, or with
        ``regression=True`` a (multi-output) regressor; labels are required."""
        from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags

        if self.regression:
            target = TargetTags(required=True, multi_output=True, single_output=True)
            return Tags(estimator_type="regressor", target_tags=target, regressor_tags=RegressorTags())
        return Tags(
            estimator_type="classifier", target_tags=TargetTags(required=True), classifier_tags=ClassifierTags()
        )

    def __repr__(self) -> str:
        defaults = {"regression": False, "num_classes": None, "tol": 1e-3, "max_iter": 100, "method": "optimized"}
        changed = [
            f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k] or type(v) is not type(defaults[k])
        ]
        return f"LogME({', '.join(changed)})"

    def fit(self, features, labels) -> float:
        """Fits every target's evidence maximisation; returns the LogME score as a Python float."""
        _checks.check_flag(self.regression, "regression")
        params = {k: v for k, v in self.get_params().items() if k != "regression"}
        result = logme_evidence(features, labels, regression=self.regression, **params)
        self.result_ = result
        self.n_features_in_ = int(result.weights.shape[1])
        self.score_ = float(jnp.mean(result.evidence))
        self.squeeze_ = bool(self.regression and np.ndim(labels) == 1)
        return self.score_

    def predict(self, features) -> jax.Array:
        """Class ids (n,) (argmax of F m_k) or regression outputs (n,) / (n, K), matching the fitted targets."""
        if not hasattr(self, "result_"):
            raise RuntimeError("LogME.predict called before fit; call fit(features, labels) first.")
        f = _checks.check_features(features, min_samples=1)
        d = self.result_.weights.shape[1]
        if f.shape[1] != d:
            raise ValueError(f"features has {f.shape[1]} columns but the model was fitted on {d}.")
        out = jnp.matmul(f, self.result_.weights.T.astype(f.dtype), precision=jax.lax.Precision.HIGHEST)
        if not self.regression:
            return jnp.argmax(out, axis=1)
        return out[:, 0] if self.squeeze_ else out

    def score(self, features, labels) -> float:
        """Accuracy of ``predict`` on (features, labels) for classification; for regression the coefficient of
        determination R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean y)^2, averaged over the K targets."""
        predicted = np.asarray(self.predict(features), dtype=np.float64)
        y = np.asarray(labels)
        if y.shape[0] != predicted.shape[0]:
            raise ValueError(f"features has {predicted.shape[0]} rows but labels has {y.shape[0]}.")
        if not self.regression:
            return float(np.mean(predicted == y))
        y = y.astype(np.float64).reshape(predicted.shape)
        residual = ((y - predicted) ** 2).sum(axis=0)
        total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        if np.any(total == 0):
            raise ValueError("R^2 is undefined for a constant target; every regression target must vary.")
        return float(np.mean(1.0 - residual / total))
