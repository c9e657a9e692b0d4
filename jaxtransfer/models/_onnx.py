"""Reading the weights of an ONNX graph and putting them into an NNX model through an explicit name map.

Exporters name initialisers either after the module that owns them (``backbone.encoder.layer.0.norm1.weight``) or
anonymously (``onnx::MatMul_1966``, a PyTorch export's transposed Linear weight; every tensor of a Keras export).
``OnnxWeights`` keys each tensor both ways: by its own name, and by the node that reads it, ``"<node name>:<input
index>"`` (``/backbone/encoder/layer.0/attention/attention/key/MatMul:1``), so a name map can say which tensor it
means without relying on the exporter's numbering. Tensors an exporter de-duplicated (one initialiser read through
``Identity`` nodes) resolve to the same array under every node that reads them.

``convert_weights`` is the one way a spec becomes a model: every entry of the map must name a tensor, every tensor of
the graph must be used by the map (or explicitly ignored), and ``assign_weights`` then checks every variable of the
model by name and shape. A graph that does not describe the architecture raises instead of loading half of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flax import nnx

from jaxtransfer.models._weights import assign_weights

__all__ = ["LAYOUTS", "OnnxNode", "OnnxWeights", "convert_weights", "read_onnx"]

# Source layout -> Flax layout, by kind of tensor.
LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # (out, in / groups, kh, kw) -> (kh, kw, in / groups, out)
    "conv_transpose": lambda a: a.transpose(2, 3, 0, 1),  # ONNX ConvTranspose (in, out, kh, kw) -> (kh, kw, in, out)
    "linear": lambda a: a.T,  # torch Linear (out, in) -> (in, out)
    "matmul": lambda a: a,  # an exported x @ W: W is already (in, out)
    "vector": lambda a: a.reshape(-1),  # (1, 1, 1, c) broadcast shapes -> (c,)
    "copy": lambda a: a,
}


@dataclass(frozen=True)
class OnnxNode:
    """One node of the graph: its name, operator, inputs and outputs (tensor names) and attributes."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class OnnxWeights:
    """The initialisers of an ONNX graph, its nodes, and where each tensor is read.

    Attributes:
        tensors: initialiser name -> array (float32 as stored).
        nodes: the graph's nodes in order (``Constant`` nodes included).
        aliases: an ``Identity`` output -> the initialiser it forwards.

    Example (built by :func:`read_onnx`; a key is an initialiser's name or ``"<node name>:<input index>"``):
        >>> from jaxtransfer.models import source_weights
        >>> graph = read_onnx(source_weights("resnet50-1by2-nsfw"))
        >>> stem = graph.initializer_of("/Conv:1")
        >>> graph[stem].shape, [n.op for n in graph.consumers(stem)]
        ((64, 3, 7, 7), ['Conv'])
    """

    tensors: dict[str, np.ndarray]
    nodes: tuple[OnnxNode, ...]
    aliases: dict[str, str]

    def resolve(self, name: str) -> str:
        """The initialiser behind ``name``: itself, or the one an ``Identity`` chain forwards."""
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def initializer_of(self, key: str) -> str:
        """The initialiser a key means: an initialiser's own name or ``"<node name>:<input index>"``."""
        if key in self.tensors:
            return key
        node_name, sep, index = key.rpartition(":")
        node = self._by_name.get(node_name) if sep else None
        if node is None or not index.isdigit() or int(index) >= len(node.inputs):
            raise KeyError(f"no initialiser or node input {key!r} in the graph.")
        name = self.resolve(node.inputs[int(index)])
        if name not in self.tensors:
            raise KeyError(f"input {index} of node {node_name!r} is {name!r}, which is not an initialiser.")
        return name

    def __getitem__(self, key: str) -> np.ndarray:
        return self.tensors[self.initializer_of(key)]

    @functools.cached_property
    def _by_name(self) -> dict[str, OnnxNode]:
        return {n.name: n for n in self.nodes}

    @functools.cached_property
    def _readers(self) -> dict[str, list[OnnxNode]]:
        readers: dict[str, list[OnnxNode]] = {}
        for n in self.nodes:
            for t in n.inputs:
                readers.setdefault(t, []).append(n)
        return readers

    def consumers(self, tensor: str, *, through: tuple[str, ...] = ("Identity", "Cast")) -> list[OnnxNode]:
        """The nodes that read ``tensor``; nodes whose op is in ``through`` are looked through (their readers count)."""
        out, todo = [], [tensor]
        while todo:
            for n in self._readers.get(todo.pop(), []):
                if n.op in through:
                    todo.extend(n.outputs)
                else:
                    out.append(n)
        return out


def read_onnx(path: str | Path) -> OnnxWeights:
    """The initialisers and nodes of the ONNX file ``path`` (needs the ``onnx`` package: the ``real`` extra).

    Example:
        >>> from jaxtransfer.models import source_weights
        >>> graph = read_onnx(source_weights("resnet50-1by2-nsfw"))
        >>> graph["/Conv:1"].shape  # the stem's kernel, read by the first Conv node
        (64, 3, 7, 7)
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ImportError("reading ONNX weights needs onnx: pip install 'jaxtransfer[real]'") from e
    model = onnx.load(str(path))
    g = model.graph
    tensors = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes, aliases = [], {}
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.name != "value"}
        nodes.append(OnnxNode(n.name, n.op_type, tuple(n.input), tuple(n.output), attrs))
        if n.op_type == "Identity" and n.input[0] in tensors:
            aliases[n.output[0]] = n.input[0]
    return OnnxWeights(tensors, tuple(nodes), aliases)


def convert_weights(
    model: nnx.Module,
    source: Mapping[str, np.ndarray] | OnnxWeights,
    name_map: Mapping[str, tuple[str, str]],
    *,
    what: str,
    ignore: Iterable[str] = (),
) -> nnx.Module:
    """``model`` with each variable ``ours`` set to ``LAYOUTS[kind](source[theirs])`` for ``name_map[ours] =
    (theirs, kind)``.

    Checked in full: every ``theirs`` must exist; every tensor of ``source`` must be used (``ignore`` lists those that
    are deliberately not, e.g. a head the model does not have); and ``assign_weights`` requires every variable of the
    model, with its exact shape. ``model`` may be abstract (``nnx.eval_shape``).

    Args:
        model: the NNX model to fill (not changed; a new one is returned).
        source: tensors by name (a torch state dict as numpy, safetensors), or an ``OnnxWeights``, whose keys may also
            be ``"<node name>:<input index>"``.
        name_map: our dotted variable path -> (their key, kind in ``LAYOUTS``).
        what: names the source in error messages.
        ignore: source tensors (keys as in ``name_map``) that are not loaded.

    Raises:
        ValueError: a missing or unused tensor, an unknown kind, or a name or shape the model does not have.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
        >>> torch_state = {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
        >>> name_map = {"kernel": ("fc.weight", "linear"), "bias": ("fc.bias", "copy")}
        >>> model = convert_weights(model, torch_state, name_map, what="a torch Linear")
        >>> model.kernel.shape
        (3, 2)
    """
    if isinstance(source, OnnxWeights):
        resolve, available = source.initializer_of, set(source.tensors)
    else:
        resolve, available = (lambda k: k), set(source)
    arrays, used = {}, set()
    missing = []
    for ours, (theirs, kind) in name_map.items():
        if kind not in LAYOUTS:
            raise ValueError(f"unknown kind {kind!r} for {ours}; known: {sorted(LAYOUTS)}.")
        try:
            key = resolve(theirs)
        except KeyError:
            missing.append(theirs)
            continue
        if key not in available:
            missing.append(theirs)
            continue
        used.add(key)
        arrays[ours] = LAYOUTS[kind](np.asarray(source[key], np.float32))
    if missing:
        raise ValueError(f"{what} lacks tensors the name map needs: {missing[:5]}{'...' if len(missing) > 5 else ''}.")
    ignored = {resolve(k) for k in ignore}
    unused = sorted(available - used - ignored)
    if unused:
        raise ValueError(
            f"{what} has tensors the name map does not use: {unused[:5]}{'...' if len(unused) > 5 else ''}."
        )
    return assign_weights(model, arrays, source=what)
