"""Adapter files: the round trip for every strategy that injects, the base fingerprint, sizes, files never clobbered."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    STRATEGIES,
    adapter_config,
    count_params,
    finetune,
    load_adapter,
    save_adapter,
)
from jaxtransfer.models import TinyViT

INJECTING = [name for name, spec in STRATEGIES.items() if spec.prepare is not None]
rng = np.random.default_rng(0)
X = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
Y = (np.arange(32) % 3).astype(np.int32)


def _vit(seed=0, depth=2):
    return TinyViT(8, 3, 2, 16, depth, 2, 3, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("strategy", INJECTING)
def test_round_trip_equals_the_trained_model(tmp_path, strategy):
    base = _vit()
    trained, _ = finetune(STRATEGIES[strategy].prepare(base), (X, Y), strategy=strategy, epochs=1, batch_size=8,
                          progress=False)  # fmt: skip
    out = save_adapter(trained, tmp_path / "adapter", base_name="tiny-vit")
    config = adapter_config(out)
    assert config["strategy"] == strategy and config["base"]["name"] == "tiny-vit"
    assert config["trained_parameters"] == count_params(trained, strategy)
    restored = load_adapter(_vit(), out)  # a fresh copy of the base (same weights, another object)
    assert nnx.graphdef(restored) == nnx.graphdef(trained)
    for a, b in zip(jax.tree.leaves(nnx.state(restored, nnx.Param)), jax.tree.leaves(nnx.state(trained, nnx.Param)),
                    strict=True):  # fmt: skip
        assert jnp.array_equal(a, b)
    assert jnp.array_equal(restored(X), trained(X))


def test_an_adapter_file_is_small_next_to_the_model(tmp_path):
    big = TinyViT(32, 3, 4, 64, 4, 4, 3, rngs=nnx.Rngs(0))
    from jaxtransfer.finetune import inject_lora

    out = save_adapter(inject_lora(big, rank=2, where="blocks.*.attn.*"), tmp_path / "a")
    weights = (out / "adapter_weights.npz").stat().st_size
    assert weights < 0.1 * 4 * count_params(big)  # well under a tenth of the float32 model
    assert (out / "adapter_config.json").stat().st_size < 20_000


def test_another_base_is_refused_saying_what_differs(tmp_path):
    from jaxtransfer.finetune import inject_lora

    out = save_adapter(inject_lora(_vit(), rank=2), tmp_path / "a")
    with pytest.raises(ValueError, match="other base weights"):
        load_adapter(_vit(seed=1), out)
    with pytest.raises(ValueError, match=r"another structure: this base has \['blocks\.2"):
        load_adapter(_vit(depth=3), out)
    wide = TinyViT(8, 3, 2, 16, 2, 2, 5, rngs=nnx.Rngs(0))  # same backbone, a 5-way head
    with pytest.raises(ValueError, match=r"head\.kernel \(16, 5\) \(adapter: \(16, 3\)\)"):
        load_adapter(wide, out)


def test_files_are_never_clobbered_and_the_strategy_must_be_clear(tmp_path):
    from jaxtransfer.finetune import inject_lora, inject_ssf

    model = inject_lora(_vit(), rank=2)
    out = save_adapter(model, tmp_path / "a")
    with pytest.raises(FileExistsError, match="force=True"):
        save_adapter(model, out)
    save_adapter(model, out, force=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not an adapter directory"):
        save_adapter(model, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="pass strategy="):
        save_adapter(_vit(), tmp_path / "b")  # nothing injected: BitFit? a linear probe? say which
    with pytest.raises(ValueError, match="pass strategy="):
        save_adapter(inject_ssf(model), tmp_path / "c")  # two kinds of adapter
    bitfit = save_adapter(_vit(), tmp_path / "bitfit", strategy="bitfit")
    assert adapter_config(bitfit)["trained_parameters"] == count_params(_vit(), "bitfit")
    with pytest.raises(FileNotFoundError, match="not an adapter directory"):
        load_adapter(_vit(), tmp_path / "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "bitfit", "mine"]  # no temporary left behind
