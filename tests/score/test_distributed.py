"""Sharded LogME on 8 simulated CPU devices equals single-device LogME; logme_many equals a loop.

The multi-device check runs in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8, so that the
rest of the suite keeps its single device.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from jaxtransfer.score import logme, logme_many, logme_sharded

_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    from jaxtransfer.score import logme
    from jaxtransfer.score import logme_sharded

    rng = np.random.default_rng(0)
    out = {"devices": jax.device_count()}
    for n in (800, 803):  # 803: rows padded to a multiple of 8
        y = np.concatenate([np.arange(5), rng.integers(0, 5, n - 5)])
        f = rng.normal(size=(5, 24))[y] + rng.normal(size=(n, 24))
        out[f"cls{n}"] = [float(logme_sharded(f, y)), float(logme(f, y))]
        t = f[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(n, 2))
        out[f"reg{n}"] = [float(logme_sharded(f, t, regression=True)), float(logme(f, t, regression=True))]
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    out["mesh2d"] = [float(logme_sharded(f, y, mesh=mesh, axis="data")), float(logme(f, y))]
    print(json.dumps(out))
    """
)


def test_sharded_over_8_devices_equals_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 8
    for key, (sharded, single) in out.items():
        assert sharded == pytest.approx(single, rel=1e-9), key


def test_sharded_on_one_device_and_its_errors(x64):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    f = rng.normal(size=(200, 6)) + y[:, None]
    assert float(logme_sharded(f, y)) == pytest.approx(float(logme(f, y)), rel=1e-9)
    with pytest.raises(ValueError, match="needs more samples than features"):
        logme_sharded(f[:5], y[:5] % 2)
    with pytest.raises(ValueError, match="axis 'model' is not an axis"):
        logme_sharded(f, y, axis="model")
    with pytest.raises(ValueError, match="labels has 199 entries"):
        logme_sharded(f, y[:-1])


def test_logme_many_equals_loop_and_groups_by_width(x64):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 150)
    models = [rng.normal(size=(150, d)) + s * y[:, None] for d, s in [(8, 1.0), (16, 0.1), (8, 0.5), (200, 0.3)]]
    got = np.asarray(logme_many(models, y))
    expected = [float(logme(f, y)) for f in models]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_logme_many_does_not_recompile_on_a_second_call():
    from jaxtransfer.score import _many as distributed

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 100)
    models = [rng.normal(size=(100, 10)) for _ in range(3)]
    logme_many(models, y)
    before = distributed._many._cache_size()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        logme_many([m + 1 for m in models], y)
    assert distributed._many._cache_size() == before


def test_logme_many_errors():
    y = np.arange(20) % 2
    with pytest.raises(TypeError, match="non-empty list"):
        logme_many(np.ones((20, 3)), y)
    with pytest.raises(TypeError, match="non-empty list"):
        logme_many([], y)
    with pytest.raises(ValueError, match=r"features\[1\] has 19 samples"):
        logme_many([np.ones((20, 3)), np.ones((19, 3))], y)
    bad = np.ones((20, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"features\[1\] contains 1 NaN"):
        logme_many([np.ones((20, 3)), bad], y)
