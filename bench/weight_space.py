"""Speed of the weight-space tools on the real MiniLM-L6 weights (22.7M parameters), against the plain JAX code a user
would otherwise write.

- ``uniform_soup`` of K copies vs a jitted ``jax.tree.map`` mean (no checks), and vs the same with a finiteness
  check (what ``uniform_soup`` also does: it rejects NaN/Inf ingredients).
- ``linear_path`` (11 points on the line between two MiniLMs, BBC News loss on 16 articles x 64 tokens): how many
  times it compiles over two calls, the time of a repeated call, vs a jitted Python loop over the coefficients
  (one compiled loss, 11 calls).

    python -m bench.weight_space          # ~2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench._common import save
from jaxtransfer.data import bbc_news
from jaxtransfer.finetune import apply_fn
from jaxtransfer.landscape import interpolate, linear_path
from jaxtransfer.models import load, tokenize
from jaxtransfer.soup import uniform_soup


def _best(fn, repeat: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def soups(params, ks=(2, 4, 8), repeat: int = 10) -> list[dict]:
    plain = jax.jit(lambda ts: jax.tree.map(lambda *xs: sum(xs) / len(xs), *ts))

    @jax.jit
    def checked(ts):
        mean = jax.tree.map(lambda *xs: sum(xs) / len(xs), *ts)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for t in ts for x in jax.tree.leaves(t)]))
        return mean, finite

    rows = []
    for k in ks:
        ings = [jax.tree.map(lambda x, i=i: x + 0.01 * i, params) for i in range(k)]
        jax.block_until_ready(ings)
        ours = _best(lambda ings=ings: uniform_soup(ings), repeat)
        ref = _best(lambda ings=ings: plain(ings), repeat)
        ref_checked = _best(lambda ings=ings: checked(ings)[1].item(), repeat)
        rows.append({
            "K": k, "uniform_soup_s": ours, "jitted_tree_mean_s": ref, "jitted_tree_mean_with_check_s": ref_checked,
            "ratio_vs_mean": ours / ref, "ratio_vs_checked_mean": ours / ref_checked,
        })  # fmt: skip
        print(
            f"K={k}: uniform_soup {1e3 * ours:.1f} ms, jitted tree mean {1e3 * ref:.1f} ms ({ours / ref:.2f}x), "
            f"with a finiteness check {1e3 * ref_checked:.1f} ms ({ours / ref_checked:.2f}x)"
        )
        del ings
    return rows


def paths(model, repeat: int = 3) -> dict:
    ds = bbc_news(max_per_class=4)
    x, y = ds.part("train")
    tokens = jnp.asarray(tokenize(list(x[:16]), max_length=64))
    labels = jnp.asarray(y[:16])
    theta_a, fn = apply_fn(model)
    other = nnx.clone(model)
    other.head = nnx.Linear(other.head.kernel.shape[0], other.head.kernel.shape[1], rngs=nnx.Rngs(5))
    theta_b = jax.tree.map(lambda p: p * 1.01, nnx.state(other, nnx.Param))
    traces = []

    def loss(params, data):
        traces.append(1)
        return optax.softmax_cross_entropy_with_integer_labels(fn(params, data[0]), data[1]).mean()

    data = (tokens, labels)
    start = time.perf_counter()
    first_path = linear_path(loss, theta_a, theta_b, data, num=11, chunk=4)
    first = time.perf_counter() - start
    again = _best(lambda: linear_path(loss, theta_a, theta_b, data, num=11, chunk=4).losses, repeat)
    compiles = len(traces)
    jitted = jax.jit(loss)
    lams = np.linspace(0, 1, 11)

    def loop():
        return [jitted(interpolate(theta_a, theta_b, float(t)), data) for t in lams]

    looped = _best(loop, repeat)
    assert np.allclose([float(v) for v in loop()], first_path.losses, rtol=1e-4)
    out = {"first_call_s": first, "repeated_call_s": again, "jitted_loop_s": looped, "traces_over_all_calls": compiles,
           "ratio_repeated_vs_loop": again / looped}  # fmt: skip
    print(f"linear_path: first call {first:.2f} s, repeated {again:.2f} s, jitted loop {looped:.2f} s "
          f"({again / looped:.2f}x); loss traced {compiles} time(s) over {repeat + 2} calls")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    model = load("minilm-l6", num_outputs=5)
    params = nnx.state(model, nnx.Param)
    size = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    result = {"parameters": size, "soups": soups(params, repeat=args.repeat), "linear_path": paths(model)}
    print(f"saved {save('weight_space', result)}")


if __name__ == "__main__":
    main()
