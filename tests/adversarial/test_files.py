"""The CLI, checkpoints and data loaders with bad inputs: one-line errors, nothing of the user's destroyed."""

import numpy as np
import pytest
from flax import nnx

from jaxtransfer.cli import main
from jaxtransfer.data import digits, digits_transfer, efficientnet_preprocess, extract_features, stratified_split
from jaxtransfer.finetune import inject_lora, inject_ssf
from jaxtransfer.models import MLP, restore_model, save_model

RNG = np.random.default_rng(0)
Y = np.arange(60) % 3
F = RNG.normal(size=(60, 4)) + np.eye(3)[Y] @ RNG.normal(size=(3, 4))


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("y.npy", Y)
    np.save("f.npy", F)
    np.save("g.npy", F[:, :2])
    np.save("f3.npy", F[None])
    np.save("short.npy", F[:-1])
    np.save("y2.npy", Y[:, None])
    np.save("nan.npy", np.where(np.eye(60, 4) > 0, np.nan, F))
    np.savez("two.npz", a=F, b=F)
    whole = (tmp_path / "f.npy").read_bytes()
    for name, data in [("empty.npy", b""), ("trunc.npy", whole[:100]), ("random.npy", RNG.bytes(500)),
                       ("random.safetensors", RNG.bytes(300)), ("trunc.npz", whole[:50]), ("table.parquet", b"x"),
                       ("existing.json", b"keep me")]:  # fmt: skip
        (tmp_path / name).write_bytes(data)
    (tmp_path / "adir").mkdir()
    return tmp_path


def _files(path):
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


R = ["rank", "--labels", "y.npy"]
CLI = [
    ("missing output dir", [*R, "f.npy", "--json", "nodir/out.json"], "the output directory nodir does not exist"),
    ("output is a directory", [*R, "f.npy", "--json", "adir"], "the output adir is a directory"),
    ("output is an input", [*R, "f.npy", "--json", "f.npy"], "the output f.npy is also an input file"),
    ("output is an input, forced", [*R, "f.npy", "--json", "f.npy", "--force"], "is also an input file"),
    ("output is the labels", [*R, "f.npy", "--json", "y.npy", "--force"], "is also an input file"),
    ("output exists", [*R, "f.npy", "--json", "existing.json"], "existing.json exists; pass --force"),
    ("empty .npy", [*R, "empty.npy"], "empty.npy: not a valid .npy array file"),
    ("truncated .npy", [*R, "trunc.npy"], "trunc.npy: not a valid .npy array file"),
    ("random bytes .npy", [*R, "random.npy"], "random.npy: not a valid .npy array file"),
    ("corrupt .safetensors", [*R, "random.safetensors"], "not a valid .safetensors file"),
    ("truncated .npz", [*R, "trunc.npz"], "trunc.npz: not a valid .npz archive"),
    ("name too long", [*R, "a" * 300 + ".npy"], "cannot use this path: File name too long"),
    ("no such file", [*R, "nothing.npy"], "no such file: nothing.npy"),
    ("no such labels", ["rank", "--labels", "nothing.npy", "f.npy"], "no such file: nothing.npy"),
    ("directory as input", [*R, "adir"], "adir is a directory, not an array file"),
    ("unsupported type", [*R, "table.parquet"], "unsupported file type '.parquet'"),
    ("several arrays", [*R, "two.npz"], r"two.npz holds 2 arrays \['a', 'b'\]: pick one"),
    ("missing key", [*R, "two.npz:c"], r"no array named 'c'; it holds \['a', 'b'\]"),
    ("2-D labels", ["rank", "--labels", "y2.npy", "f.npy"], r"labels must be 1-D class ids; got shape \(60, 1\)"),
    ("3-D features", [*R, "f3.npy"], r"features must be 2-D \(n, D\); got shape \(1, 60, 4\)"),
    ("rows", [*R, "short.npy"], "short.npy: 59 rows but y.npy has 60 labels"),
    ("NaN features", [*R, "nan.npy"], "features contains 4 NaN or Inf"),
    ("same name twice", [*R, "f.npy", "f.npy"], "two models are named 'f'"),
    ("demo output exists", ["demo", "--feature-maps", "--no-probe", "--json", "existing.json"], "existing.json exists"),
    ("demo output dir", ["demo", "--json", "nodir/x.json"], "the output directory nodir does not exist"),
]


@pytest.mark.parametrize(("case", "argv", "match"), CLI, ids=[c[0] for c in CLI])
def test_cli_failures_are_one_line_exit_2_and_touch_nothing(zoo, capsys, case, argv, match):
    import re

    before = _files(zoo)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jaxtransfer {argv[0]}: error: "), err
    assert re.search(match, err), err
    assert "allow_pickle" not in err and "Traceback" not in err
    assert _files(zoo) == before  # no input changed, no output written


ARGPARSE = [
    ("unknown option", [*R, "f.npy", "--bogus"], "unrecognized arguments: --bogus"),
    ("unknown score", [*R, "f.npy", "--score", "magic"], "invalid choice: 'magic'"),
    ("missing labels", ["rank", "f.npy"], "the following arguments are required: --labels"),
    ("no command", [], "the following arguments are required: command"),
]


@pytest.mark.parametrize(("case", "argv", "match"), ARGPARSE, ids=[c[0] for c in ARGPARSE])
def test_usage_errors_are_one_line_and_exit_2(zoo, capsys, case, argv, match):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def test_cli_force_overwrites_the_output_atomically(zoo, capsys):
    import json

    assert main([*R, "f.npy", "g.npy", "--json", "existing.json", "--force"]) == 0
    rows = json.loads((zoo / "existing.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["f", "g"] or [r["model"] for r in rows] == ["g", "f"]
    assert not [p for p in zoo.iterdir() if p.name.startswith(".")]  # no temporary file left


def _mlp(out=3):
    return MLP(4, (8,), out, rngs=nnx.Rngs(0))


def test_save_model_force_never_deletes_what_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "paper.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="is not a jaxtransfer/orbax checkpoint"):
        save_model(_mlp(), folder, force=True)
    assert (folder / "paper.tex").read_text() == "precious"
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    with pytest.raises(FileExistsError, match="is not a jaxtransfer/orbax checkpoint"):
        save_model(_mlp(), file, force=True)
    assert file.read_text() == "keep"
    with pytest.raises(FileExistsError, match="pass force=True"):
        save_model(_mlp(), folder)


def test_save_model_force_replaces_a_checkpoint(tmp_path):
    a, b = _mlp(), MLP(4, (8,), 3, rngs=nnx.Rngs(1))
    save_model(a, tmp_path / "ck")
    save_model(b, tmp_path / "ck", force=True)
    restored = restore_model(_mlp(), tmp_path / "ck")
    np.testing.assert_array_equal(np.asarray(restored.head.kernel[...]), np.asarray(b.head.kernel[...]))


RESTORE = [
    ("SSF checkpoint, plain template", lambda: inject_ssf(_mlp()), lambda: _mlp(), "the template lacks: inject ssf"),
    ("plain checkpoint, SSF template", lambda: _mlp(), lambda: inject_ssf(_mlp()), "restore into the model before "
     "inject_ssf"),
    ("LoRA checkpoint, plain template", lambda: inject_lora(_mlp(), 2), lambda: _mlp(), "inject lora with {'rank': 2"),
    ("head width", lambda: _mlp(5), lambda: _mlp(3), r"head.bias of shape \(5,\), the template \(3,\)"),
    ("deeper model", lambda: MLP(4, (8, 8), 3, rngs=nnx.Rngs(0)), lambda: _mlp(), "the template does not"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "saved", "template", "match"), RESTORE, ids=[c[0] for c in RESTORE])
def test_restoring_into_another_structure_says_what_differs_and_how_to_fix_it(tmp_path, case, saved, template, match):
    save_model(saved(), tmp_path / "ck")
    with pytest.raises(ValueError, match=match):
        restore_model(template(), tmp_path / "ck", inject=False)


def test_restore_injects_the_recorded_adapters_into_a_plain_template(tmp_path):
    from jaxtransfer.finetune import LoRAAdapted, inject_ia3, lora_sites

    saved = inject_lora(MLP(4, (8, 8), 3, rngs=nnx.Rngs(0)), 2, alpha=4.0, where="layers.1")
    saved.layers[1].lora_b[...] = np.arange(16, dtype=np.float32).reshape(2, 8)  # as if trained
    save_model(saved, tmp_path / "ck")
    restored = restore_model(MLP(4, (8, 8), 3, rngs=nnx.Rngs(5)), tmp_path / "ck")
    assert lora_sites(restored) == ["layers.1"] and isinstance(restored.layers[1], LoRAAdapted)
    assert restored.layers[1].scale == 2.0
    np.testing.assert_array_equal(np.asarray(restored.layers[1].lora_b[...]), np.asarray(saved.layers[1].lora_b[...]))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(saved(x)))
    with pytest.raises(ValueError, match="does not match the template"):  # other adapters in the template: refused
        restore_model(inject_ia3(MLP(4, (8, 8), 3, rngs=nnx.Rngs(5)), where="layers.0"), tmp_path / "ck")


def test_restore_from_a_path_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        restore_model(_mlp(), tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a checkpoint"):
        restore_model(_mlp(), tmp_path / "folder")


DATA = [
    ("max_per_class=2", lambda: digits(max_per_class=2), ValueError, "max_per_class must be an int >= 3"),
    ("max_per_class=3.5", lambda: digits(max_per_class=3.5), ValueError, "max_per_class must be an int >= 3"),
    ("max_per_class=True", lambda: digits(max_per_class=True), ValueError, "max_per_class must be an int >= 3"),
    ("image_size=0", lambda: digits(image_size=0), ValueError, "image_size must be a positive int"),
    ("image_size=-8", lambda: digits(image_size=-8), ValueError, "image_size must be a positive int"),
    ("image_size=2.5", lambda: digits(image_size=2.5), ValueError, "image_size must be a positive int"),
    ("fractions", lambda: digits(fractions=(0.5, 0.5, 0.5)), ValueError, "summing to 1"),
    ("fraction 0", lambda: digits(fractions=(1.0, 0.0, 0.0)), ValueError, "positive numbers"),
    ("fraction NaN", lambda: digits(fractions=(np.nan, 0.5, 0.5)), ValueError, "positive numbers"),
    ("fractions of two", lambda: stratified_split(Y, fractions=(0.5, 0.5)), ValueError, "three positive numbers"),
    ("fractions strings", lambda: stratified_split(Y, fractions="abc"), ValueError, "three positive numbers"),
    ("transfer fraction 0", lambda: digits_transfer(target_train_fraction=0), ValueError, r"in \(0, 1\)"),
    ("transfer fraction 1", lambda: digits_transfer(target_train_fraction=1.0), ValueError, r"in \(0, 1\)"),
    ("transfer fraction -1", lambda: digits_transfer(target_train_fraction=-1), ValueError, r"in \(0, 1\)"),
    ("split 2-D labels", lambda: stratified_split(Y[:, None]), ValueError, "labels must be a non-empty 1-D array"),
    ("split empty", lambda: stratified_split(np.array([], int)), ValueError, "non-empty 1-D"),
    ("split small class", lambda: stratified_split(np.r_[Y, 7, 7]), ValueError, r"class\(es\) \[7\] have \[2\]"),
    ("preprocess size 0", lambda: efficientnet_preprocess(np.zeros((2, 8, 8)), 0), ValueError, "size must be a "
     "positive int"),
    ("preprocess range", lambda: efficientnet_preprocess(np.full((2, 8, 8), 2.0), 16), ValueError,
     r"values in \[0, 1\]"),
    ("preprocess NaN", lambda: efficientnet_preprocess(np.full((2, 8, 8), np.nan), 16), ValueError, "finite"),
    ("preprocess shape", lambda: efficientnet_preprocess(np.zeros((2, 8)), 16), ValueError, r"\(n, H, W\)"),
    ("extract drops rows", lambda: extract_features(_mlp(), F.astype(np.float32), transform=lambda b: b[:-1],
     progress=False, batch_size=16), ValueError, "transform must keep one row per sample: a batch of 16 came back "
     "with 15 rows"),
    ("extract fn rows", lambda: extract_features(_mlp(), F.astype(np.float32), fn=lambda m, b: m(b).sum(0),
     progress=False, batch_size=16), ValueError, "fn must return arrays with one row per sample"),
    ("extract empty", lambda: extract_features(_mlp(), F[:0], progress=False), ValueError, "x is empty"),
    ("extract batch 0", lambda: extract_features(_mlp(), F, batch_size=0, progress=False), ValueError,
     "batch_size must be a positive int"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), DATA, ids=[c[0] for c in DATA])
def test_data_arguments_are_validated(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("max_per_class", [3, 4, 5])
def test_small_subsamples_keep_one_sample_of_every_class_in_every_part(max_per_class):
    ds = digits(max_per_class=max_per_class)
    for part in ("train", "val", "test"):
        _, y = ds.part(part)
        assert sorted(set(y.tolist())) == list(range(10))
    assert sum(len(v) for v in ds.splits.values()) == 10 * max_per_class


def test_digits_transfer_small_fractions_keep_both_splits():
    parts = digits_transfer(target_train_fraction=1e-6)
    assert len(parts["target_train"][1]) == 1 and len(parts["target_test"][1]) > 0


def test_a_killed_conversion_leaves_nothing_that_loads(tmp_path):
    """A conversion killed before its rename leaves only a temporary directory: load does not pick it up."""
    from jaxtransfer.models import load

    tmp = tmp_path / ".efficientnet-lite0.abc.tmp"
    tmp.mkdir()
    (tmp / "weights.safetensors").write_bytes(b"half a file")
    with pytest.raises(FileNotFoundError, match="no converted efficientnet-lite0 weights"):
        load("efficientnet-lite0", directory=tmp_path, convert=False)
    (tmp_path / "efficientnet-lite0").mkdir()  # a directory without its digest (not made by convert)
    (tmp_path / "efficientnet-lite0" / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(OSError, match="is incomplete"):
        load("efficientnet-lite0", directory=tmp_path, convert=False)
