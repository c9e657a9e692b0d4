"""Model selection: rank a zoo of pre-trained models by transferability scores, and check a ranking.

The LogME paper measures how well a score ranks models by the weighted Kendall tau between the scores and the
fine-tuned accuracies (``scipy.stats.weightedtau``, which weighs the top of the ranking more). A tau_w of t means,
roughly, that a pair of models ordered by the score is ordered the same way by the ground truth with probability
(t + 1) / 2.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxtransfer._files import atomic_write_text
from jaxtransfer._plotting import pyplot
from jaxtransfer._progress import progress_bar
from jaxtransfer._timing import timed
from jaxtransfer.score import SCORES, Score

__all__ = ["SCORES", "Ranking", "rank", "weighted_tau"]


@dataclasses.dataclass(frozen=True)
class Ranking:
    """Models sorted by the first score, best first; one column per score.

    Attributes:
        models: model names, best first by ``primary``.
        scores: score name -> values, aligned with ``models``.
        seconds: score name -> wall time of each model's score without JAX compilation, aligned with ``models``.
        primary: the score the rows are sorted by.
        compile_seconds: score name -> the part of each call spent tracing and compiling (the first model of a
            shape pays it; later ones of the same shape reuse the compiled score), aligned with ``models``.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> ranking = jt.rank({'a': features, 'b': features[:, :1]}, labels)
        >>> ranking.best, ranking.to_dict()['rows'][0]['model']
        ('a', 'a')
    """

    models: tuple[str, ...]
    scores: dict[str, tuple[float, ...]]
    seconds: dict[str, tuple[float, ...]]
    primary: str
    compile_seconds: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)

    @property
    def best(self) -> str:
        return self.models[0]

    def __len__(self) -> int:
        return len(self.models)

    def to_dict(self) -> dict:
        """A JSON-ready dict: ``{"primary": ..., "rows": [{"rank", "model", <score>: value, ...}, ...]}``."""
        rows = []
        for i, m in enumerate(self.models):
            row = {"rank": i + 1, "model": m}
            row.update({s: v[i] for s, v in self.scores.items()})
            row.update({f"{s}_seconds": v[i] for s, v in self.seconds.items()})
            row.update({f"{s}_compile_seconds": v[i] for s, v in self.compile_seconds.items()})
            rows.append(row)
        return {"primary": self.primary, "rows": rows}

    def to_json(self, path: str | None = None) -> str:
        """The table as JSON text; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")  # a run killed midway never leaves half a file
        return text

    def __str__(self) -> str:
        width = max(5, *(len(m) for m in self.models))
        cols = list(self.scores)
        head = f"{'rank':>4}  {'model':<{width}}" + "".join(f"{c:>20}" for c in cols)
        lines = [head]
        for i, m in enumerate(self.models):
            lines.append(f"{i + 1:>4}  {m:<{width}}" + "".join(f"{self.scores[c][i]:>20.6g}" for c in cols))
        return "\n".join(lines)

    def plot(self, score: str | None = None, ax=None):
        """A horizontal bar chart of one score (default: the primary), ordered by that score, best on top, each bar
        labelled with its value. Needs matplotlib."""
        plt = pyplot()

        score = self.primary if score is None else score
        if score not in self.scores:
            raise KeyError(f"no score {score!r} in this ranking; have {list(self.scores)}.")
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.4 * len(self.models) + 1))
        values = list(self.scores[score])
        order = sorted(range(len(values)), key=lambda i: values[i])  # ascending: barh draws bottom-up, best on top
        bars = ax.barh([self.models[i] for i in order], [values[i] for i in order])
        ax.bar_label(bars, fmt="%.4g", fontsize=8, padding=2)
        ax.set_xlabel(f"{score}, higher is better\n({_units(score)})")  # units on a line of their own: some are long
        ax.set_title(f"{len(values)} models ranked by {score}")
        ax.margins(x=0.15)  # room for the value labels
        return ax


def _units(score: str) -> str:
    """The registered units of ``score`` (a ranking made of other callables: generic)."""
    return SCORES[score].units if score in SCORES else "score units"


_INPUTS = ("features", "source_probabilities")


def _model_input(model: str, value, scorer: Score):
    """What ``scorer`` reads of one model: the array itself, or from a ``{"features", "source_probabilities"}``
    mapping the entry its ``input`` names (hard source labels come from the probabilities)."""
    if not isinstance(value, Mapping):
        return scorer.argument(value)
    unknown = set(value) - set(_INPUTS)
    if unknown:
        raise ValueError(f"model {model!r}: unknown entries {sorted(unknown)}; a model maps {list(_INPUTS)} to arrays.")
    wanted = "features" if scorer.input == "features" else "source_probabilities"
    if wanted not in value:
        raise ValueError(
            f"model {model!r} has no {wanted!r}, which score {scorer.name!r} reads (it has {sorted(value)})."
        )
    return scorer.argument(value[wanted])


def _resolve(score) -> list[Score]:
    items = score if isinstance(score, list | tuple) else [score]
    if not items:
        raise ValueError("score must name at least one score.")
    out = []
    for s in items:
        if isinstance(s, str):
            if s not in SCORES:
                raise ValueError(f"unknown score {s!r}; choose from {sorted(SCORES)} or pass a callable.")
            out.append(SCORES[s])
        elif isinstance(s, Score):
            out.append(s)
        elif callable(s):  # a user's function: it reads what the user passes, unchanged
            out.append(Score(getattr(s, "__name__", "score"), s, regression=True))
        else:
            raise TypeError(f"score must be a name or a callable; got {type(s).__name__}.")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate score names {names}.")
    return out


def rank(
    features_by_model: Mapping[str, object],
    labels,
    score: str | Callable | Sequence[str | Callable] = "logme",
    *,
    progress: bool | None = None,
    **score_kwargs,
) -> Ranking:
    """Scores every model and returns them ranked, best first.

    Args:
        features_by_model: model name -> its (n, D) features of the target data (for ``"leep"``: the source
            model's (n, C_s) softmax outputs; for ``"nce"``: its (n,) hard source labels or (n, C_s) outputs), or
            a dict ``{"features": (n, D), "source_probabilities": (n, C_s)}`` from which every score takes what it
            reads, so that feature scores and source-head scores rank the same zoo in one call.
        labels: (n,) class ids (or, for LogME with ``regression=True``, targets).
        score: a score name (see ``SCORES``), a callable ``f(features, labels, **kw) -> scalar``, or a list of
            them (one column each; the rows are sorted by the first).
        progress: a tqdm progress bar on stderr: ``True`` always, ``False`` never, ``None`` (default) once
            scoring has taken more than a second, for any number of models.
        **score_kwargs: passed to every score (e.g. ``regression=True`` for LogME).

    Returns:
        A :class:`Ranking`.


    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> zoo = {'strong': features, 'weak': rng.normal(size=(60, 4))}
        >>> ranking = jt.rank(zoo, labels, score=['logme', 'hscore'])
        >>> ranking.models
        ('strong', 'weak')

    Raises:
        ValueError: no models, an unknown score, or a score that fails on a model (the message names it).
    """
    if not isinstance(features_by_model, Mapping) or not features_by_model:
        raise ValueError("features_by_model must be a non-empty dict of model name -> features.")
    scorers = _resolve(score)
    if score_kwargs.get("regression"):
        classification_only = [s.name for s in scorers if not s.regression]
        if classification_only:
            regression = [n for n, s in SCORES.items() if s.regression]
            raise ValueError(
                f"regression=True: the scores {classification_only} take class labels only (regression: {regression})."
            )
    names = list(features_by_model)
    for model in names:  # every model has what every score reads, before any score runs
        for s in scorers:
            _model_input(model, features_by_model[model], s)
    it = progress_bar(
        names, enabled=progress is not False, delay=0.0 if progress else 1.0, desc="scoring models", unit="model"
    )
    values = {s.name: [] for s in scorers}
    seconds = {s.name: [] for s in scorers}
    compile_seconds = {s.name: [] for s in scorers}
    for model in it:
        for s in scorers:
            x = _model_input(model, features_by_model[model], s)
            with timed() as t:
                try:
                    v = float(s(x, labels, **score_kwargs))
                except (TypeError, ValueError) as err:
                    raise type(err)(f"model {model!r}, score {s.name!r}: {err}") from err
            seconds[s.name].append(t.run)
            compile_seconds[s.name].append(t.compile)
            values[s.name].append(v)
    primary = scorers[0].name
    order = sorted(range(len(names)), key=lambda i: -values[primary][i])
    return Ranking(
        models=tuple(names[i] for i in order),
        scores={n: tuple(v[i] for i in order) for n, v in values.items()},
        seconds={n: tuple(v[i] for i in order) for n, v in seconds.items()},
        primary=primary,
        compile_seconds={n: tuple(v[i] for i in order) for n, v in compile_seconds.items()},
    )


def weighted_tau(scores, ground_truth) -> float:
    """Weighted Kendall tau between predicted scores and a ground truth (e.g. fine-tuned accuracies).

    Uses ``scipy.stats.weightedtau`` with its defaults (hyperbolic weights on the ranks, averaged over both
    orders), as the LogME paper does. 1: the same order; -1: reversed; a pair of models ordered by the score is
    ordered the same way by the ground truth with probability about (tau + 1) / 2.

    Args:
        scores: a sequence of scores, a dict model -> score, or a :class:`Ranking` (its primary score).
        ground_truth: a sequence aligned with ``scores``, or a dict model -> value (aligned by name).

    Returns:
        tau_w as a Python float.


    Example:
        >>> import jaxtransfer as jt
        >>> jt.weighted_tau([0.9, 0.5, 0.1], [80.0, 70.0, 75.0])
        0.5454545454545454

    Raises:
        ValueError: on fewer than 2 models, different lengths or model names, or NaN/Inf.
    """
    from scipy.stats import weightedtau

    if isinstance(scores, Ranking):
        scores = dict(zip(scores.models, scores.scores[scores.primary], strict=True))
    if isinstance(scores, Mapping) != isinstance(ground_truth, Mapping):
        raise ValueError("scores and ground_truth must both be dicts (aligned by model name) or both sequences.")
    if isinstance(scores, Mapping):
        if set(scores) != set(ground_truth):
            missing = sorted(set(scores) ^ set(ground_truth))
            raise ValueError(f"scores and ground_truth name different models: {missing}.")
        keys = list(scores)
        scores, ground_truth = [scores[k] for k in keys], [ground_truth[k] for k in keys]
    try:
        x, y = np.asarray(scores, np.float64), np.asarray(ground_truth, np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"scores and ground_truth must be real numbers, one per model: {err}.") from err
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"scores and ground_truth must be 1-D of the same length; got {x.shape} and {y.shape}.")
    if x.size < 2:
        raise ValueError("weighted_tau needs at least 2 models.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores and ground_truth must be finite.")
    for name, v in (("scores", x), ("ground_truth", y)):
        if np.all(v == v[0]):
            raise ValueError(
                f"{name} is the same for every model ({v[0]!r}): it orders no pair, so weighted tau is undefined."
            )
    return float(weightedtau(x, y).statistic)
