"""Experiments: the model zoo pre-trained here, the model-selection benchmark, and the demo (Flax; not array core).

``build_zoo`` pre-trains and caches a zoo on real source tasks, ``model_selection`` fine-tunes every zoo model on
real targets and measures how well every registered score predicted the fine-tuned accuracies, and ``run_demo``
(``jaxtransfer demo``) runs both at CI size. ``pretraining_checkpoints`` and ``transfer_from_checkpoints`` run the
early-checkpoint analysis of "What is being transferred?".
"""

from jaxtransfer.experiments._benchmark import (
    ALL_SCORES,
    finetune_accuracy,
    model_selection,
    ranking_agreement,
    score_features,
    summarise,
    summary_table,
    target_report,
)
from jaxtransfer.experiments._demo import digits_feature_maps, run_demo, run_feature_demo
from jaxtransfer.experiments._early_checkpoints import pretraining_checkpoints, transfer_from_checkpoints
from jaxtransfer.experiments._real_demo import SMALL_MODELS, load_ground_truth, run_real_demo
from jaxtransfer.experiments._real_zoo import REAL_ZOO, RealBackbone, real_zoo
from jaxtransfer.experiments._regularizers import regularizer_study
from jaxtransfer.experiments._what_is_transferred import what_is_transferred
from jaxtransfer.experiments._zoo import (
    CI_ZOO,
    FULL_ZOO,
    SOURCE_TASKS,
    TARGET_TASKS,
    Candidate,
    ZooModel,
    build_zoo,
    source_task,
    target_task,
    to_8x8,
)

__all__ = [
    "ALL_SCORES",
    "CI_ZOO",
    "FULL_ZOO",
    "REAL_ZOO",
    "SMALL_MODELS",
    "SOURCE_TASKS",
    "TARGET_TASKS",
    "Candidate",
    "RealBackbone",
    "ZooModel",
    "build_zoo",
    "digits_feature_maps",
    "finetune_accuracy",
    "load_ground_truth",
    "model_selection",
    "pretraining_checkpoints",
    "ranking_agreement",
    "real_zoo",
    "regularizer_study",
    "run_demo",
    "run_feature_demo",
    "run_real_demo",
    "score_features",
    "source_task",
    "summarise",
    "summary_table",
    "target_report",
    "target_task",
    "to_8x8",
    "transfer_from_checkpoints",
    "what_is_transferred",
]
