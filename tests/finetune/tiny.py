"""Small instances of the bundled architectures for the strategy tests (random weights, a few ms per call)."""

import numpy as np
from flax import nnx

from jaxtransfer.models import BertConfig, MiniLM

TOKENS = np.array([[1, 5, 7, 9, 0, 0], [1, 3, 0, 0, 0, 0]], np.int32)  # two texts, 0 = padding


def tiny_minilm(depth: int = 2, num_outputs: int = 3) -> MiniLM:
    """A MiniLM of width 16 (2 heads, MLP 32) over a 50-token vocabulary."""
    config = BertConfig(vocab_size=50, max_positions=16, dim=16, depth=depth, heads=2, mlp_dim=32)
    return MiniLM(config, num_outputs=num_outputs, rngs=nnx.Rngs(0))
