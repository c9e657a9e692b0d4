"""The ``jaxtransfer`` command line."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxtransfer", description="Transfer learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="rank feature extractors of the bundled digits data by LogME and check against a linear probe",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the random feature maps (default 0)")
    demo.add_argument("--no-probe", action="store_true", help="skip the logistic-regression ground truth")
    demo.add_argument("--json", metavar="PATH", help="also write the table to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from jaxtransfer.demo import run_demo

        table = run_demo(seed=args.seed, probe=not args.no_probe)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(table, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
