"""The command line, run as a user runs it: in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_zforcing.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_default_run_trains_and_writes_parseable_outputs(tmp_path):
    out = tmp_path / "run"
    result = run_cli("--max-steps", "4", "--log-every", "2", "--quiet", "--out", str(out))
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["data_config"]["dataset"] == "digits"
    assert config["model_config"]["emission"] == "bernoulli"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == [1, 2, 4]
    assert all(r["elbo"] < 0 and r["kl"] == r["kl"] for r in records if r["kind"] == "step")
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["progress"]["step"] == 4


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--dataset", "nope"], "--dataset"),
    (["--aux-input", "x"], "--aux-input"),
    (["--lr", "-1", "--max-steps", "1"], "lr must be > 0"),
    (["--device", "cuda:7", "--max-steps", "1"], "--device"),
    (["--device", "tpu", "--max-steps", "1"], "--device"),
    (["--dataset", "timit", "--max-steps", "1"], "timit"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run"),
    (["--data-option", "novalue"], "KEY=VALUE"),
    (["--data-option", "colour=red", "--max-steps", "1"], "colour"),
])
def test_bad_flags_give_a_one_line_error_and_exit_2(tmp_path, args, needle):
    out = [] if "--resume" in args else ["--out", str(tmp_path / "run")]
    result = run_cli(*args, *out, "--quiet")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert needle in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error" in last


def test_help_documents_every_flag_with_its_default():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--dataset", "--guide", "--aux-weight", "--aux-input", "--kl-start", "--rnn-dim", "--batch-size",
                 "--lr", "--epochs", "--max-steps", "--seed", "--device", "--out", "--resume", "--quiet"):
        assert flag in result.stdout
    assert "default: digits" in result.stdout


def test_resume_keeps_saved_settings_and_refuses_flags_it_would_ignore(tmp_path):
    out = tmp_path / "run"
    assert run_cli("--max-steps", "2", "--epochs", "3", "--quiet", "--out", str(out)).returncode == 0
    refused = run_cli("--resume", str(out), "--lr", "0.1", "--quiet")
    assert refused.returncode == 2 and "--lr" in refused.stderr and "Traceback" not in refused.stderr
    resumed = run_cli("--resume", str(out), "--max-steps", "4", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["progress"]["step"] == 4
    assert state["train_config"].epochs == 3 and state["train_config"].max_steps == 4


def test_model_option_flags_reach_the_model_config():
    from pyro_zforcing.cli.flags import model_sizes_from
    from pyro_zforcing.cli.train import train_parser

    args = train_parser().parse_args(["--z-conditioning", "cond-ln", "--embedding", "leaky", "--init", "torch",
                                          "--emission-clamp", "8"])
    sizes = model_sizes_from(args)
    assert (sizes["z_conditioning"], sizes["embedding"], sizes["init"], sizes["emission_clamp"]) == \
        ("cond-ln", "leaky", "torch", 8.0)
    defaults = model_sizes_from(train_parser().parse_args([]))
    assert (defaults["z_conditioning"], defaults["embedding"], defaults["init"], defaults["emission_clamp"]) == \
        ("concat", "linear", "orthogonal", None)


ENTRY_POINTS = {
    "console script": [str(Path(sys.executable).with_name("zforcing"))],
    "python -m": [sys.executable, "-m", "pyro_zforcing"],
    "run.py": [sys.executable, str(ROOT / "run.py")],
}


def test_the_console_script_python_m_and_run_py_are_one_program(tmp_path):
    """Same --help, and the same run (metrics.jsonl up to wall-clock time) for the same seed."""
    helps, metrics = {}, {}
    for name, command in ENTRY_POINTS.items():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        helps[name] = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=ROOT, env=env,
                                     timeout=120).stdout
        out = tmp_path / name.replace(" ", "-")
        done = subprocess.run([*command, "--max-steps", "3", "--log-every", "1", "--rnn-dim", "8", "--quiet",
                               "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert done.returncode == 0, (name, done.stderr)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        metrics[name] = [{k: v for k, v in r.items() if k != "time_s"} for r in records]
    assert "usage: zforcing [train]" in helps["run.py"] and "evaluate" in helps["run.py"]
    assert helps["console script"] == helps["python -m"] == helps["run.py"]
    assert metrics["console script"] == metrics["python -m"] == metrics["run.py"]
    assert [r["step"] for r in metrics["run.py"] if r["kind"] == "step"] == [1, 2, 3]
