"""Old path of the zoo, kept as an alias: the code lives in :mod:`jaxtransfer.experiments`."""

from jaxtransfer.experiments import (
    CI_ZOO,
    FULL_ZOO,
    SOURCE_TASKS,
    TARGET_TASKS,
    Candidate,
    ZooModel,
    build_zoo,
    source_task,
    target_task,
)

__all__ = [
    "CI_ZOO",
    "FULL_ZOO",
    "SOURCE_TASKS",
    "TARGET_TASKS",
    "Candidate",
    "ZooModel",
    "build_zoo",
    "source_task",
    "target_task",
]
