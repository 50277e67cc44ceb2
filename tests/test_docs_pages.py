"""The code of docs/your-data.md and docs/pyro-tools.md runs as written (so it cannot go stale)."""

import re
import shlex
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(page: str, language: str):
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), re.S)


def run_python(page: str, code: str) -> dict:
    namespace = {"__name__": "docs_example"}
    exec(compile(code, str(DOCS / page), "exec"), namespace)
    return namespace


def test_your_data_ten_line_example_trains_evaluates_and_samples(tmp_path, monkeypatch, capsys):
    """The Python block, then the commands through the program's entry point (one epoch instead
    of five, to keep the suite fast)."""
    from pyro_zforcing.cli.main import main

    monkeypatch.chdir(tmp_path)
    write, *rest = blocks("your-data.md", "python")
    run_python("your-data.md", write)
    commands = [line.split("#")[0] for line in blocks("your-data.md", "bash")[0].splitlines() if line.strip()]
    assert len(write.strip().splitlines()) + len(commands) <= 10
    for command in commands:
        argv = shlex.split(command.replace("--epochs 5", "--epochs 1"))
        assert argv[0] == "zforcing"
        assert main(argv[1:]) == 0, command
    drawn = np.load(tmp_path / "runs" / "walks" / "samples" / "samples.npy")
    assert drawn.shape[0] == 4 and drawn.shape[2] == 3
    assert (tmp_path / "runs" / "walks" / "eval-test.json").is_file()
    for code in rest:  # the Python API block reads the same file
        run_python("your-data.md", code)
    out = capsys.readouterr().out
    assert "gaussian 3 140 40 20" in out  # 200 walks: 20 % valid, 10 % test


def test_pyro_tools_example_draws_predictive_samples_and_renders_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (code,) = blocks("pyro-tools.md", "python")
    namespace = run_python("pyro-tools.md", code)
    out = capsys.readouterr().out
    assert "{'z': (20, 5, 48, 4), 'x': (20, 5, 48, 1)}" in out
    assert "torch.Size([5]) torch.Size([48, 1])" in out and "z -> x" in out
    posterior, prior, batch = namespace["posterior"], namespace["prior"], namespace["batch"]
    assert set(prior) == {"z", "x"} and prior["x"].shape == posterior["x"].shape
    assert set(posterior["x"].unique().tolist()) <= {0.0, 1.0} and batch.mask.all()
