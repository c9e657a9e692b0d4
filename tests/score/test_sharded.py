"""Sharded LogME on 8 CPU devices (in process: tests/conftest.py sets jax_num_cpu_devices=8) equals single-device
LogME, for classification and regression, padded rows and a 2-D mesh."""

import jax
import numpy as np
import pytest

from jaxtransfer.score import logme, logme_sharded


@pytest.mark.parametrize("n", [800, 803])  # 803: rows padded to a multiple of 8
def test_sharded_over_8_devices_equals_single_device(x64, n):
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    y = np.concatenate([np.arange(5), rng.integers(0, 5, n - 5)])
    f = rng.normal(size=(5, 24))[y] + rng.normal(size=(n, 24))
    assert float(logme_sharded(f, y)) == pytest.approx(float(logme(f, y)), rel=1e-9)
    t = f[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(n, 2))
    assert float(logme_sharded(f, t, regression=True)) == pytest.approx(float(logme(f, t, regression=True)), rel=1e-9)
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    assert float(logme_sharded(f, y, mesh=mesh, axis="data")) == pytest.approx(float(logme(f, y)), rel=1e-9)


def test_sharded_on_one_device_and_its_errors(x64):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    f = rng.normal(size=(200, 6)) + y[:, None]
    one = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    assert float(logme_sharded(f, y, mesh=one)) == pytest.approx(float(logme(f, y)), rel=1e-9)
    with pytest.raises(ValueError, match="needs more samples than features"):
        logme_sharded(f[:5], y[:5] % 2)
    with pytest.raises(ValueError, match="axis 'model' is not an axis"):
        logme_sharded(f, y, axis="model")
    with pytest.raises(ValueError, match="labels has 199 entries"):
        logme_sharded(f, y[:-1])
