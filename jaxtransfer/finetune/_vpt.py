"""Visual Prompt Tuning (Jia et al., ECCV 2022): learnable prompt tokens in a transformer's sequence, trained alone
(with the head); the backbone stays frozen.

Shallow VPT trains p tokens (p d parameters) inserted before the first block; deep VPT a fresh set before every
block (blocks x p d). Works on every model with the prompt hook (``jaxtransfer.models.Prompts``: ``TinyViT``,
``MiniLM``, or a model of yours that follows it).

Cost: VPT cannot be merged. Every block processes L + p tokens instead of L, so inference pays attention on
(1 + p + L)^2 pairs and the MLP on 1 + p + L tokens (for p = 10 on a 50-token ViT about 20 % more MLP work and 44 %
more attention); SSF, LoRA and IA3 cost nothing at inference once merged.
"""

from __future__ import annotations

from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy
from jaxtransfer.models import PromptParam, Prompts

__all__ = ["inject_vpt"]


def inject_vpt(model: nnx.Module, num_tokens: int = 10, *, deep: bool = False, seed: int = 0) -> nnx.Module:
    """Returns a copy of ``model`` with ``num_tokens`` VPT prompt tokens (``model`` is unchanged).

    Args:
        model: a model with the prompt hook (``prompts`` attribute and ``prompt_shape``; see
            ``jaxtransfer.models.Prompts``).
        num_tokens: p (the paper searches 1 to 200; default 10).
        deep: a fresh set of prompts before every block (VPT-deep) instead of one before the first (VPT-shallow).
        seed: for the prompts' initialisation.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params
        >>> from jaxtransfer.models import PromptParam, TinyViT
        >>> vit = TinyViT(8, 1, 4, 16, 3, 2, 5, rngs=nnx.Rngs(0))  # 3 blocks of width 16
        >>> count_params(inject_vpt(vit, 4), PromptParam), count_params(inject_vpt(vit, 4, deep=True), PromptParam)
        (64, 192)

    Raises:
        ValueError: the model has no prompt hook, already has prompts, or ``num_tokens`` < 1.
    """
    if not hasattr(model, "prompts") or not hasattr(model, "prompt_shape"):
        raise ValueError(
            f"{type(model).__name__} exposes no token sequence for VPT: it needs the prompt hook (a `prompts` "
            "attribute its forward passes the tokens through, and `prompt_shape`); see jaxtransfer.models.Prompts. "
            "TinyViT and MiniLM have it; for convolutional models use SSF, LoRA, IA3 or adapters."
        )
    if model.prompts is not None:
        raise ValueError("the model already has VPT prompts: inject once.")
    blocks, dim = model.prompt_shape
    prompts = Prompts(num_tokens, dim, blocks=blocks, deep=deep, rngs=nnx.Rngs(seed))
    model = nnx.clone(model)
    model.prompts = prompts
    return model


def _check(model: nnx.Module) -> None:
    if not nnx.state(model, PromptParam):
        raise ValueError("strategy 'vpt' but the model has no prompts: call inject_vpt(model, num_tokens) first.")


def _config(model: nnx.Module) -> dict:
    return {"num_tokens": model.prompts.num_tokens, "deep": model.prompts.deep}


register_strategy(
    "vpt",
    nnx.Any(PromptParam, HEAD_PARAMS),
    prepare=inject_vpt,
    check=_check,
    config=_config,
    reference="Jia et al., ECCV 2022",
)
