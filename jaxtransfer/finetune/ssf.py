"""Old path of SSF, kept as an alias: see :mod:`jaxtransfer.finetune`."""

from jaxtransfer.finetune._ssf import SSF, SSFAdapted, SSFParam, inject_ssf, merge_ssf, ssf_sites

__all__ = ["SSF", "SSFAdapted", "SSFParam", "inject_ssf", "merge_ssf", "ssf_sites"]
