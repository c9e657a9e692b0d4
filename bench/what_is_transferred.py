"""What is being transferred (Neyshabur, Sedghi and Zhang, 2020) on the digits
(:func:`jaxtransfer.experiments.what_is_transferred`).

    python -m bench.what_is_transferred
"""

from __future__ import annotations

import jax

from bench._common import save
from jaxtransfer.experiments import what_is_transferred


def main() -> None:
    out = what_is_transferred()
    for name, p in out["pairs"].items():
        print(
            f"{name:<5} test acc {p['test_accuracy']}, barrier {p['barrier']:.4f} at l={p['barrier_at']:.2f}, "
            f"CKA {p['cka']:.4f}, relative distance from start {p['relative_distance_from_start']:.4f}, "
            f"distance between the pair {p['distance_between_pair']:.3f}"
        )
    print("module criticality (P-T):", {k: float(f"{v:.3g}") for k, v in out["criticality"].items()})
    for row in out["block_shuffle"]:
        print(f"block {row['block']}: P-T {row['P-T']:.4f}, RI-T {row['RI-T']:.4f}, gap {row['gap']:+.4f}")
    print(f"saved {save('what_is_transferred', out)}")


if __name__ == "__main__":
    jax.config.update("jax_numpy_rank_promotion", "allow")
    main()
