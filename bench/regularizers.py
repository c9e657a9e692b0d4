"""Plain fine-tuning vs L2-SP, DELTA, BSS and Co-Tuning with little target data, over several seeds
(:func:`jaxtransfer.experiments.regularizer_study`).

    python -m bench.regularizers            # ~3 minutes on 2 CPU cores
"""

from __future__ import annotations

from bench._common import save
from jaxtransfer.experiments import regularizer_study


def main() -> None:
    out = regularizer_study()
    print(f"digits 5-9 with {out['per_class']} labelled images per class, {len(out['seeds'])} seeds:")
    print(f"{'method':<12}{'test acc mean':>15}{'std':>8}   runs")
    for m, s in out["summary"].items():
        print(f"{m:<12}{s['mean']:>15.4f}{s['std']:>8.4f}   {[round(r, 4) for r in s['runs']]}")
    print(f"saved {save('regularizers', out)}")


if __name__ == "__main__":
    main()
