import json
import subprocess
import sys

from jaxtransfer.cli import main


def test_demo_writes_a_ranked_table(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--no-probe", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    scores = [r["logme"] for r in table["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 8
    # Two principal components of 8x8 digits are a far weaker representation than 2048 random Fourier features.
    names = [r["model"] for r in table["rows"]]
    assert names.index("random-fourier-2048") < names.index("pixels") < names.index("pca-2") == 7
    printed = capsys.readouterr().out
    assert "rank" in printed and "random-fourier-2048" in printed


def test_help_runs_as_a_console_command():
    res = subprocess.run([sys.executable, "-m", "jaxtransfer.cli", "demo", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "--no-probe" in res.stdout


def test_unknown_command_exits_non_zero():
    res = subprocess.run([sys.executable, "-m", "jaxtransfer.cli", "frobnicate"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "invalid choice" in res.stderr
