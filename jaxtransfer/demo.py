"""Old path of demo, kept as an alias: the code lives in :mod:`jaxtransfer.experiments`."""

from jaxtransfer.experiments import digits_feature_maps, run_demo, run_feature_demo

__all__ = ["digits_feature_maps", "run_demo", "run_feature_demo"]
