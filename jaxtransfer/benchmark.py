"""Old path of benchmark, kept as an alias: the code lives in :mod:`jaxtransfer.experiments`."""

from jaxtransfer.experiments import ALL_SCORES, finetune_accuracy, model_selection, score_features, summary_table

__all__ = ["ALL_SCORES", "finetune_accuracy", "model_selection", "score_features", "summary_table"]
