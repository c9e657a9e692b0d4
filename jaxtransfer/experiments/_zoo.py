"""A model zoo pre-trained here on real source tasks, cached with orbax, and the real target tasks it transfers to.

Source tasks are transfer variants of half of the scikit-learn digits (the *source pool*, a fixed stratified 50 %);
the other half (the *target pool*) never reaches pre-training, so a target built from it shares no image with any
source task:

=====================  ======================================================================================
source task            images (8 x 8 grey) and labels
=====================  ======================================================================================
``digits``             the source pool, 10 classes
``digits0-4``          the source pool, classes 0-4
``digits-rot90``       rotated by 90 degrees, 10 classes
``digits-inverted``    1 - x, 10 classes
``digits-noisy``       + N(0, 0.3^2) pixel noise, clipped, 10 classes
``digits-shuffled``    2 x 2 tiles permuted (spatial structure destroyed), 10 classes
=====================  ======================================================================================

=====================  ======================================================================================
target task            images and labels (``Dataset`` with a stratified 30 / 35 / 35 split)
=====================  ======================================================================================
``mnist``              real MNIST digits (``mnist_5k``), 28 x 28 (zoo models see them resized to 8 x 8), 10 classes
``digits5-9``          the target pool's digits 5-9, relabelled 0-4 (a class-subset transfer)
``digits-inverted5-9`` the same images inverted (the domain of one source task only)
=====================  ======================================================================================

Zoo models differ as real zoos do: architecture (MLP, residual CNN, tiny ViT) and width/depth, source task,
training length (full, an early checkpoint after 1 epoch) and a few deliberately weak ones (random init, no
training). Pre-training is deterministic (seeded init and shuffling) and each model is cached under
``cache_dir()/zoo/<name>-<hash of its spec>`` with orbax, so a second build only restores.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from flax import nnx

from jaxtransfer._progress import progress_bar
from jaxtransfer.data.dataset import Dataset, make_dataset, stratified_split
from jaxtransfer.data.digits import load_digits
from jaxtransfer.data.images import mnist_5k
from jaxtransfer.data.variants import add_noise, block_shuffle, class_subset, invert, resize, rotate

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
    "to_8x8",
]


def _pools() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    images, labels = load_digits()
    parts = stratified_split(labels, fractions=(0.5, 0.25, 0.25), seed=0)
    x = images[..., None]
    target = np.sort(np.concatenate([parts["val"], parts["test"]]))
    return (x[parts["train"]], labels[parts["train"]]), (x[target], labels[target])


SOURCE_TASKS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "digits": lambda x, y: (x, y),
    "digits0-4": lambda x, y: class_subset(x, y, range(5)),
    "digits-rot90": lambda x, y: (rotate(x), y),
    "digits-inverted": lambda x, y: (invert(x), y),
    "digits-noisy": lambda x, y: (add_noise(x, 0.3, seed=0), y),
    "digits-shuffled": lambda x, y: (block_shuffle(x, 2, seed=0), y),
}


def source_task(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 8, 8, 1) in [0, 1] and int32 labels of a source task (see the module docstring).

    Example:
        >>> x, y = source_task("digits0-4")
        >>> x.shape, sorted(set(y.tolist()))
        ((450, 8, 8, 1), [0, 1, 2, 3, 4])
    """
    if name not in SOURCE_TASKS:
        raise ValueError(f"unknown source task {name!r}; available: {sorted(SOURCE_TASKS)}.")
    (x, y), _ = _pools()
    x, y = SOURCE_TASKS[name](x, y)
    return x, np.asarray(y, np.int32)


def _digits_target(name: str, *, inverted: bool, **split) -> Dataset:
    _, (x, y) = _pools()
    x, y = class_subset(x, y, range(5, 10))
    return make_dataset(name, invert(x) if inverted else x, y, [str(d) for d in range(5, 10)], **split)


def _mnist_target(**split) -> Dataset:
    return mnist_5k(**split)


TARGET_TASKS: dict[str, Callable[..., Dataset]] = {
    "mnist": _mnist_target,
    "digits5-9": lambda **split: _digits_target("digits5-9", inverted=False, **split),
    "digits-inverted5-9": lambda **split: _digits_target("digits-inverted5-9", inverted=True, **split),
}


def target_task(name: str, *, seed: int = 0, max_per_class: int | None = None, fractions=(0.3, 0.35, 0.35)) -> Dataset:
    """A target task as a ``Dataset`` with its fixed split (see the module docstring).

    The default split trains on 30 % and keeps 35 % each for validation and test: a small training set is where the
    choice of pre-trained model matters, and large validation and test sets make the ground truth less noisy.

    Example:
        >>> target_task("digits5-9", max_per_class=10)
        Dataset('digits5-9', x(50, 8, 8, 1), 5 classes, train=15, val=15, test=20)
    """
    if name not in TARGET_TASKS:
        raise ValueError(f"unknown target task {name!r}; available: {sorted(TARGET_TASKS)}.")
    return TARGET_TASKS[name](seed=seed, max_per_class=max_per_class, fractions=fractions)


TRAINER_VERSION = 2
"""Bumped whenever ``finetune`` trains differently for the same arguments (2: padded partial batches, per-epoch
shuffling seeded by (seed, epoch)), so that a cached zoo from an older trainer is pre-trained again."""


@dataclass(frozen=True)
class ZooModel:
    """How one zoo model is made: architecture, size, source task and training.

    Attributes:
        name: unique name.
        arch: ``"mlp"`` (``size`` = hidden widths), ``"cnn"`` (``size`` = (channels, depth)) or ``"vit"`` (``size`` =
            (dim, depth, heads); patches of 2 x 2).
        source: a ``SOURCE_TASKS`` name; the head has that task's classes.
        epochs: pre-training epochs (0: the random initialisation, a deliberately weak model).
        lr, batch_size, seed: Adam learning rate, batch size, seed of the init and the shuffling.

    Example:
        >>> spec = ZooModel("mlp16-random", "mlp", (16,), "digits", 0)
        >>> spec.key, type(spec.build(10)).__name__
        ('mlp16-random-abfb86244816', 'MLP')
    """

    name: str
    arch: str
    size: tuple[int, ...]
    source: str
    epochs: int
    lr: float = 3e-3
    batch_size: int = 32
    seed: int = 0

    def build(self, num_outputs: int) -> nnx.Module:
        """A freshly initialised model of this architecture with a ``num_outputs`` head (8 x 8 x 1 inputs)."""
        from jaxtransfer.models import CNN, MLP, TinyViT

        rngs = nnx.Rngs(self.seed)
        if self.arch == "mlp":
            return MLP(64, tuple(self.size), num_outputs, rngs=rngs)
        if self.arch == "cnn":
            channels, depth = self.size
            return CNN(1, channels, depth, num_outputs, rngs=rngs)
        if self.arch == "vit":
            dim, depth, heads = self.size
            return TinyViT(8, 1, 2, dim, depth, heads, num_outputs, rngs=rngs)
        raise ValueError(f"unknown arch {self.arch!r}; use 'mlp', 'cnn' or 'vit'.")

    @property
    def key(self) -> str:
        """The cache key: the name and a hash of every field and of the trainer's version (a changed recipe, or a
        trainer that trains differently, is a new cache entry)."""
        recipe = {**asdict(self), "trainer": TRAINER_VERSION}
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.name}-{digest}"


# The CI-sized zoo: 12 models, pre-trained in about a minute on 2 cores.
CI_ZOO: tuple[ZooModel, ...] = (
    ZooModel("cnn16-digits", "cnn", (16, 2), "digits", 30),
    ZooModel("cnn32-digits", "cnn", (32, 2), "digits", 30),
    ZooModel("cnn16-digits0-4", "cnn", (16, 2), "digits0-4", 30),
    ZooModel("cnn16-rot90", "cnn", (16, 2), "digits-rot90", 30),
    ZooModel("cnn16-inverted", "cnn", (16, 2), "digits-inverted", 30),
    ZooModel("cnn16-noisy", "cnn", (16, 2), "digits-noisy", 30),
    ZooModel("cnn16-shuffled", "cnn", (16, 2), "digits-shuffled", 30),
    ZooModel("cnn16-digits-1epoch", "cnn", (16, 2), "digits", 1),
    ZooModel("cnn16-random", "cnn", (16, 2), "digits", 0),
    ZooModel("mlp128-digits", "mlp", (128,), "digits", 30),
    ZooModel("mlp128-random", "mlp", (128,), "digits", 0),
    ZooModel("vit32-digits", "vit", (32, 2, 4), "digits", 30),
)

# The bench zoo: the CI zoo plus deeper / wider models and more sources.
FULL_ZOO: tuple[ZooModel, ...] = (
    *CI_ZOO,
    ZooModel("cnn32x3-digits", "cnn", (32, 3), "digits", 40),
    ZooModel("cnn32-digits0-4", "cnn", (32, 2), "digits0-4", 30),
    ZooModel("cnn32-inverted", "cnn", (32, 2), "digits-inverted", 30),
    ZooModel("cnn16-digits-3epochs", "cnn", (16, 2), "digits", 3),
    ZooModel("mlp256x2-digits", "mlp", (256, 256), "digits", 30),
    ZooModel("mlp128-shuffled", "mlp", (128,), "digits-shuffled", 30),
    ZooModel("vit48x3-digits", "vit", (48, 3, 4), "digits", 40),
    ZooModel("vit32-rot90", "vit", (32, 2, 4), "digits-rot90", 30),
)


@dataclass(frozen=True)
class Candidate:
    """A model in the running: a name, an NNX model with ``features(x)`` and a source ``head``, and the transform
    from a target task's raw images (n, H, W, 1) in [0, 1] to the model's inputs.

    ``source_head=False`` says that ``model(x)`` is not a source classifier (a backbone without one, a layer cut out
    of one): the scores that read source-class probabilities (LEEP, NCE) are then not computed for it.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> c = Candidate("mlp", MLP(64, (16,), 10, rngs=nnx.Rngs(0)), to_8x8)
        >>> c.transform(np.zeros((3, 28, 28, 1))).shape
        (3, 8, 8, 1)
    """

    name: str
    model: nnx.Module
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    info: dict = field(default_factory=dict)
    source_head: bool = True


def to_8x8(images: np.ndarray) -> np.ndarray:
    """The zoo models' input: (n, 8, 8, 1) in [0, 1]; larger images are resized.

    Example:
        >>> to_8x8(np.zeros((2, 28, 28, 1))).shape
        (2, 8, 8, 1)
    """
    images = np.asarray(images, np.float32)
    return images if images.shape[1:3] == (8, 8) else resize(images, 8)


@functools.cache
def _num_classes(source: str) -> int:
    """Classes of a source task (its head's width), computed once per process."""
    return int(source_task(source)[1].max()) + 1


def _pretrain(spec: ZooModel) -> nnx.Module:
    import optax

    from jaxtransfer.finetune import finetune

    x, y = source_task(spec.source)
    model = spec.build(int(y.max()) + 1)
    if spec.epochs == 0:
        return model
    trained, _ = finetune(model, (x, y), strategy="full", optimizer=optax.adam(spec.lr), epochs=spec.epochs,
                          batch_size=spec.batch_size, seed=spec.seed, progress=False)  # fmt: skip
    return trained


def build_zoo(
    specs: Sequence[ZooModel] = CI_ZOO,
    *,
    directory: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """Pre-trains (or restores from the cache) every model of ``specs`` and returns them as candidates.

    Args:
        specs: the zoo (``CI_ZOO``: 12 models; ``FULL_ZOO``: 20).
        directory: the cache (default ``jaxtransfer.models.cache_dir() / "zoo"``); checkpoints are written
            atomically by orbax, one folder per model, named by ``ZooModel.key``.
        progress: a tqdm bar over the models.
        echo: called with one line per model (built or restored, seconds).

    Returns:
        ``Candidate`` s (transform: ``to_8x8``), in the order of ``specs``; ``info`` holds the spec, whether it was
        restored, and the pre-training seconds.

    Example:
        >>> import tempfile
        >>> specs = [ZooModel("mlp16-random", "mlp", (16,), "digits", 0),
        ...          ZooModel("mlp16-digits", "mlp", (16,), "digits", 2)]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     zoo = build_zoo(specs, directory=d, progress=False)
        ...     again = build_zoo(specs[:1], directory=d, progress=False)  # read back from the cache
        >>> [c.name for c in zoo], zoo[0].info["restored"], again[0].info["restored"]
        (['mlp16-random', 'mlp16-digits'], False, True)
    """
    import time

    from jaxtransfer.models import cache_dir, restore_model, save_model

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"zoo names must be unique; got {names}.")
    root = Path(directory) if directory is not None else cache_dir() / "zoo"
    it = progress_bar(specs, enabled=progress, desc="zoo", unit="model")
    out = []
    for spec in it:
        path = root / spec.key
        started = time.perf_counter()
        restored = path.exists()
        if restored:
            model = restore_model(spec.build(_num_classes(spec.source)), path)
        else:
            model = _pretrain(spec)
            save_model(model, path)
        seconds = time.perf_counter() - started
        if echo is not None:
            echo(f"{spec.name:<22} {'restored' if restored else 'pre-trained'} in {seconds:.1f} s")
        info = {**asdict(spec), "restored": restored, "seconds": seconds}
        out.append(Candidate(spec.name, model, to_8x8, info))
    return out
