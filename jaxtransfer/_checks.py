"""Validation of the arrays passed to the transferability scores.

Shape and dtype checks run at trace time. Value checks (NaN/Inf, label ranges, missing classes) need concrete
values: they run whenever the input is not a tracer, i.e. before the jit-compiled core is entered, so a user gets a
``ValueError`` naming the argument instead of a silent NaN. Inside a user's own ``jax.jit`` the value checks are
skipped (tracers have no values) and only shapes and dtypes are checked, unless the function runs under
:func:`jaxtransfer.checked`: then they are computed on device and raised on the host (see ``require``).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []

# While jaxtransfer.checked traces a function: message -> traced predicate of every value check on tracers.
_STAGED = contextvars.ContextVar("jaxtransfer_staged_checks", default=None)


@contextlib.contextmanager
def staged_checks():
    """Collects the value checks on traced inputs made within this block; yields the dict message -> predicate."""
    staged: dict = {}
    token = _STAGED.set(staged)
    try:
        yield staged
    finally:
        _STAGED.reset(token)


def require(ok, message: str) -> None:
    """A value check: raises ``ValueError(message)`` when ``ok`` is concrete and false. When ``ok`` is traced it is
    recorded for :func:`jaxtransfer.checked` (which returns it next to the result and raises on the host) and is
    otherwise skipped (plain ``jit``: tracers have no values)."""
    if _is_concrete(ok):
        if not bool(ok):
            raise ValueError(message)
        return
    staged = _STAGED.get()
    if staged is not None:
        ok = jnp.all(ok)
        staged[message] = staged[message] & ok if message in staged else ok


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def as_array(x, name: str):
    """Returns ``x`` as a jax or numpy array of real numbers, without copying a jax array."""
    if isinstance(x, jax.Array):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of real numbers; could not convert: {err}") from err
    kind = np.dtype(arr.dtype).kind
    if kind not in "biuf" and arr.dtype != jnp.bfloat16:
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    return arr


def float_dtype(*arrays) -> np.dtype:
    """The floating dtype the scores compute in: float64 if an input is float64 and x64 is on, else float32.

    Half precision inputs are promoted to float32: a Gram matrix accumulated in bf16/fp16 is not usable.
    """
    dtype = np.result_type(*(a.dtype for a in arrays), np.float32)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float32
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _feature_matrix(features, name: str, min_samples: int):
    """``features`` as a (n, D) array of real numbers with n >= ``min_samples`` and D >= 1 (shape checks only)."""
    arr = as_array(features, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, D) (one row per sample); got shape {arr.shape}.")
    n, d = arr.shape
    if n < min_samples:
        raise ValueError(f"{name} must have at least {min_samples} samples (rows); got {n}.")
    if d < 1:
        raise ValueError(f"{name} must have at least one feature (column); got shape {arr.shape}.")
    return arr


def check_features(features, name: str = "features", *, min_samples: int = 2) -> jax.Array:
    """Checks a (n, D) feature matrix and returns it as a floating jax array (float32, or float64 under x64).

    Raises:
        TypeError: if the array does not hold real numbers.
        ValueError: if it is not 2-D, has fewer than ``min_samples`` rows or no column, or holds NaN/Inf.
    """
    arr = _feature_matrix(features, name, min_samples)
    out = jnp.asarray(arr, dtype=float_dtype(arr))
    finite = jnp.isfinite(out).all()
    if _is_concrete(finite) and not bool(finite):
        bad = int(jnp.sum(~jnp.isfinite(out)))
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); remove or impute them first.")
    require(finite, f"{name} contains NaN or Inf value(s); remove or impute them first.")
    return out


def in_host_memory(x) -> bool:
    """Whether ``x`` is host data: not a jax array, or a jax array whose buffers are all on CPU devices (a copy to
    numpy is then free; from an accelerator it is a transfer)."""
    if isinstance(x, jax.core.Tracer):
        return False
    if isinstance(x, jax.Array):
        return all(d.platform == "cpu" for d in x.devices())
    return True


def host_features(features, name: str = "features", *, min_samples: int = 2) -> tuple[np.ndarray, np.dtype, float]:
    """:func:`check_features` for concrete input, on the host and without a copy: returns (the array as numpy,
    the dtype the scores compute in, max |f|).

    A jax array on the CPU is viewed, not copied; a numpy array is returned as it is (a float64 one is converted
    to float32 later, block by block, when x64 is off). The NaN/Inf check is two reductions without temporaries:
    max(f) and min(f) are both finite exactly when every entry is (NaN propagates through both). Nothing here
    compiles, so the checks cost the same at every n.
    """
    arr = _feature_matrix(features, name, min_samples)
    dtype = float_dtype(arr)
    host = np.asarray(arr)
    hi, lo = host.max(), host.min()
    # Compared in the compute dtype: a float64 value beyond float32's range is not finite once converted.
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(np.asarray(hi, dtype)) and np.isfinite(np.asarray(lo, dtype))
        bad = 0 if finite else int(np.count_nonzero(~np.isfinite(host.astype(dtype))))
    if not finite:
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); remove or impute them first.")
    return host, dtype, float(max(abs(float(hi)), abs(float(lo))))


def check_class_labels(
    labels,
    n: int,
    num_classes: int | None = None,
    *,
    require_all: bool = True,
    name: str = "labels",
    against: str = "features",
    min_classes: int = 2,
) -> tuple[jax.Array, int]:
    """Checks (n,) integer class ids in [0, C) and returns them as int32 with C.

    ``C`` is ``num_classes`` when given, else ``max(labels) + 1``. Every class in [0, C) must occur at least once,
    unless ``require_all`` is false (a chunk of a stream may miss classes; a source model may never predict some).
    ``name`` and ``against`` name the argument and the one whose length it must match in the messages.

    Raises:
        TypeError: if the labels are not integers (e.g. floats: use ``regression=True`` for real targets).
        ValueError: on a wrong shape, a length different from ``n``, negative ids, ids >= ``num_classes``,
            a class without samples, or fewer than ``min_classes`` classes.
    """
    arr = as_array(labels, name)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(
            f"{name} must be integer class ids; got dtype {arr.dtype}. For real-valued targets pass "
            "regression=True; for float-coded classes convert with .astype(int)."
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of shape (n,) of class ids; got shape {arr.shape}. "
            "For several real-valued targets of shape (n, K) pass regression=True."
        )
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {against} has {n}.")
    if num_classes is not None and (not isinstance(num_classes, int | np.integer) or num_classes < min_classes):
        raise ValueError(f"the number of classes of {name} must be an integer >= {min_classes}; got {num_classes!r}.")
    if _is_concrete(arr) and arr.size:
        # Range checks in the labels' own dtype, before the cast to int32 can wrap a large id around.
        host_own = np.asarray(arr)
        lo_own, hi_own = host_own.min(), host_own.max()
        if lo_own < 0:
            raise ValueError(f"{name} must be >= 0; got {lo_own}.")
        if hi_own > np.iinfo(np.int32).max or (num_classes is not None and hi_own >= num_classes):
            bound = f"num_classes={num_classes}" if num_classes is not None else "2**31 - 1"
            raise ValueError(f"{name} must be < {bound}; got {hi_own} (dtype {arr.dtype}).")
    # numpy input is cast on the host (a device cast would compile once per length n)
    out = jnp.asarray(arr.astype(np.int32) if isinstance(arr, np.ndarray) else arr, dtype=jnp.int32)
    if not _is_concrete(out):
        if num_classes is None:
            raise ValueError(
                f"the number of classes of {name} must be given (num_classes=...) when it is traced (jit, vmap)."
            )
        if _STAGED.get() is not None and arr.size:  # in the labels' own dtype, as above
            require(jnp.min(arr) >= 0, f"{name} must be >= 0.")
            require(jnp.max(arr) < num_classes, f"{name} must be < num_classes={num_classes}.")
            if require_all:
                counts = jax.ops.segment_sum(jnp.ones_like(out), jnp.clip(out, 0, num_classes - 1), num_classes)
                require(jnp.all(counts > 0), f"every class in [0, {num_classes}) of {name} needs a sample.")
        return out, int(num_classes)
    host = np.asarray(out)
    lo, hi = int(host.min()), int(host.max())
    if lo < 0:
        raise ValueError(f"{name} must be >= 0; got {lo}.")
    if num_classes is None:
        num_classes = hi + 1
    elif hi >= num_classes:
        raise ValueError(f"{name} must be < num_classes={num_classes}; got {hi}.")
    counts = np.bincount(host, minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if missing.size and require_all:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if missing.size > 10 else "")
        raise ValueError(
            f"class(es) {shown} of range [0, {num_classes}) have no samples; relabel the classes to "
            "0..C-1 (e.g. np.unique(labels, return_inverse=True)[1])."
        )
    if num_classes < min_classes:
        raise ValueError(f"{name} must contain at least {min_classes} classes; got {num_classes}.")
    return out, int(num_classes)


def _target_matrix(targets, n: int):
    """Regression targets (n,) or (n, K) as a 2-D (n, K) array of real numbers (shape checks only)."""
    arr = as_array(targets, "targets")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"targets must have shape (n,) or (n, K); got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(f"targets has {arr.shape[0]} rows but features has {n} samples (rows).")
    if arr.shape[1] < 1:
        raise ValueError(f"targets must have at least one column; got shape {arr.shape}.")
    return arr


def check_targets(targets, n: int, *, reject_zero: bool = True) -> jax.Array:
    """Checks real-valued regression targets (n,) or (n, K); returns them as a floating (n, K) jax array.

    Raises:
        TypeError: if they are not real numbers.
        ValueError: on a wrong shape or length, NaN/Inf, or (if ``reject_zero``) a target column that is
            identically zero (its evidence is unbounded; a chunk of a stream may have one).
    """
    arr = _target_matrix(targets, n)
    out = jnp.asarray(arr, dtype=float_dtype(arr))
    require(jnp.isfinite(out).all(), "targets contain NaN or Inf values; remove or impute them first.")
    if _is_concrete(out):
        zero = np.flatnonzero(np.asarray(jnp.all(out == 0, axis=0)))
        if zero.size and reject_zero:
            raise ValueError(
                f"target column(s) {', '.join(map(str, zero))} are identically zero: the evidence is "
                "unbounded. Drop them."
            )
    return out


def host_targets(targets, n: int) -> np.ndarray:
    """:func:`check_targets` (``reject_zero=True``) for concrete input, in numpy: returns (n, K) float64."""
    arr = _target_matrix(targets, n)
    out = np.asarray(arr, np.float64)
    cast = out.astype(float_dtype(arr))  # the values as the scores see them
    if not np.isfinite(cast).all():
        raise ValueError("targets contain NaN or Inf values; remove or impute them first.")
    zero = np.flatnonzero(np.all(cast == 0, axis=0))
    if zero.size:
        raise ValueError(
            f"target column(s) {', '.join(map(str, zero))} are identically zero: the evidence is unbounded. Drop them."
        )
    return out


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}; got {value!r}.")
    return int(value)


def check_flag(value, name: str) -> bool:
    """A boolean option: ``True``/``False`` (or a NumPy bool), never a string or a number that merely looks true."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


def check_score(value, what: str) -> float:
    """A held-out score (from a user's ``evaluate``) as a float; NaN or Inf raises, since a NaN would silently never,
    or always, win a comparison."""
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a real number; got {value!r}.") from err
    if not np.isfinite(out):
        raise ValueError(f"{what} is {out}: fix the evaluation (a NaN or Inf score cannot be compared).")
    return out


def check_method(method: str) -> str:
    if method not in ("optimized", "naive"):
        raise ValueError(f"method must be 'optimized' or 'naive'; got {method!r}.")
    return method


def check_iteration(tol: float, max_iter: int) -> None:
    check_positive_int(max_iter, "max_iter")
    if isinstance(tol, bool) or not (isinstance(tol, int | float | np.number) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number; got {tol!r}.")


def check_probabilities(probs, n: int, name: str = "source_probs", *, atol: float = 1e-3) -> jax.Array:
    """Checks (n, C_s) probabilities: non-negative, rows summing to 1 within ``atol``.

    Raises:
        ValueError: on a wrong shape, NaN/Inf, negative entries, or rows that do not sum to 1 (logits?).
    """
    p = check_features(probs, name, min_samples=1)
    if p.shape[0] != n:
        raise ValueError(f"{name} has {p.shape[0]} rows but labels has {n} entries.")
    if not _is_concrete(p):
        require(jnp.all(p >= 0), f"{name} has negative entries; pass probabilities.")
        require(jnp.all(jnp.abs(jnp.sum(p, axis=1) - 1) <= atol), f"the rows of {name} must sum to 1.")
    if _is_concrete(p):
        if bool(jnp.any(p < 0)):
            raise ValueError(f"{name} has negative entries; pass probabilities (jax.nn.softmax of the logits).")
        worst = float(jnp.max(jnp.abs(jnp.sum(p, axis=1) - 1)))
        if worst > atol:
            raise ValueError(
                f"the rows of {name} must sum to 1 (off by up to {worst:.3g}); pass probabilities "
                "(jax.nn.softmax of the logits), not logits."
            )
    return p


def check_features_and_labels(
    features, labels, num_classes: int | None = None, *, rescale: bool = False, centre: bool = False
) -> tuple[jax.Array, jax.Array, int]:
    """The common checks of the feature-based scores: (n, D) features and (n,) class ids -> (f, labels, C).

    Features whose rows are all identical (all zeros included) carry no information that these scores can
    measure (their covariances are zero): that raises ``ValueError`` instead of a NaN or an arbitrary value.
    ``rescale=True`` (for scores invariant to the feature scale) divides the features by a power of two near
    max |F|: exact in floating point, so the score is the same at every finite scale and no Gram matrix
    overflows or underflows. ``centre=True`` (for scores invariant to a translation of the features) subtracts
    the column means first, in float64 when the input is a float64 NumPy array (so that an offset large against
    the spread, e.g. 1e6 + O(1), loses nothing in the cast to float32), else in the compute dtype.
    """
    f = check_features(features)
    lab, c = check_class_labels(labels, f.shape[0], num_classes)
    if _is_concrete(f) and not bool(jnp.any(f != f[:1])):
        raise ValueError(
            "features are the same for every sample (constant rows): no score can tell classes apart with them; "
            "check the feature extractor (e.g. a dead layer or an all-zero input)."
        )
    if centre:
        if isinstance(features, np.ndarray) and features.dtype == np.float64 and f.dtype != np.float64:
            f = jnp.asarray(features - features.mean(axis=0), f.dtype)
        else:
            f = f - jnp.mean(f, axis=0, keepdims=True)
    return (power_of_two_rescale(f)[0] if rescale else f), lab, c


def power_of_two_exponent(f: jax.Array) -> jax.Array:
    """The integer k with max |f| / 2^k in [0.5, 1) (0 for an all-zero f)."""
    return jnp.frexp(jnp.max(jnp.abs(f)))[1]


def power_of_two_rescale(f: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f / 2^k, 2^k) with max |f| / 2^k in [0.5, 1): exact in floating point (only exponents change)."""
    exponent = power_of_two_exponent(f)
    return jnp.ldexp(f, -exponent), jnp.ldexp(jnp.ones((), f.dtype), exponent)


def finite_result(value: jax.Array, score: str) -> jax.Array:
    """Raises ``FloatingPointError`` on a non-finite score (concrete values only); returns it unchanged."""
    if not _is_concrete(value):
        require(jnp.all(jnp.isfinite(value)), f"{score}: the score is not finite.")
    elif not bool(jnp.all(jnp.isfinite(value))):
        raise FloatingPointError(
            f"{score}: the score is not finite ({value}); the features overflow or underflow this score's "
            "computation at their scale or precision. Rescale the features or use float64 (jax_enable_x64)."
        )
    return value


def check_logme_inputs(features, labels, regression, num_classes, tol, max_iter, method):
    """All of LogME's checks: returns (features, labels or (n, K) targets, C or None for regression)."""
    check_flag(regression, "regression")
    check_method(method)
    check_iteration(tol, max_iter)
    f = check_features(features)
    return (f, *check_logme_labels(labels, f.shape[0], regression, num_classes))


def check_logme_labels(labels, n: int, regression: bool, num_classes, *, host: bool = False):
    """LogME's labels: (int32 class ids, C) or, with ``regression``, ((n, K) targets, None). With ``host`` (concrete
    input) as numpy arrays, the targets in float64, checked without compiling anything."""
    if regression:
        if num_classes is not None:
            raise ValueError("num_classes applies to classification only; drop it or regression=True.")
        return (host_targets(labels, n) if host else check_targets(labels, n)), None
    lab, c = check_class_labels(labels, n, num_classes)
    return (np.asarray(lab) if host else lab), c
