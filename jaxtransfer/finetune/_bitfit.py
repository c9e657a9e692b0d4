"""BitFit (Ben Zaken, Ravfogel and Goldberg, ACL 2022): every bias of the backbone trains, plus the head."""

from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy

__all__: list[str] = []


def _is_bias(path, _value) -> bool:
    return bool(path) and path[-1] == "bias"


register_strategy("bitfit", nnx.Any(HEAD_PARAMS, nnx.All(nnx.Param, _is_bias)), reference="Ben Zaken et al., ACL 2022")
