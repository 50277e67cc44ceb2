"""Bad input at the command line: one line on stderr, exit code 2, never a traceback, nothing allocated."""

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.config import DataConfig, ModelConfig, TrainConfig
from pyro_zforcing.guides import GUIDES
from pyro_zforcing.memory import check_training_fits, parameter_count
from pyro_zforcing.build import build_objective

from test_cli import run_cli


def main_with_stderr(argv):
    """``zforcing(argv)`` in this process: (exit code, what it wrote to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = zforcing(list(argv))
    return code, err.getvalue()


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and "error" in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_help_lists_every_command_with_one_line_each():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "sample", "plot", "ablate"):
        lines = [line for line in result.stdout.splitlines() if line.strip().startswith(command + " ")]
        assert len(lines) == 1, (command, result.stdout)


@pytest.mark.parametrize("word,nearest", [("evalute", "evaluate"), ("smaple", "sample"), ("abalte", "ablate"),
                                          ("plto", "plot"), ("xyzzy", None)])
def test_an_unknown_command_suggests_the_nearest_and_exits_2(word, nearest):
    code, err = main_with_stderr([word, "--checkpoint", "x.pt"])
    assert_one_line_error(code, err, f"unknown command {word!r}")
    assert (f"did you mean {nearest!r}" in err) == (nearest is not None)


FLOAT_FLAGS = ("--aux-weight", "--aux-start", "--aux-end", "--aux-step", "--kl-start", "--kl-step", "--bwd-weight",
               "--lr", "--clip-norm")


@pytest.mark.parametrize("flag", FLOAT_FLAGS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_non_finite_numbers_are_refused_for_every_float_flag(tmp_path, flag, value):
    code, err = main_with_stderr([f"{flag}={value}", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, flag, "finite")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make,field", [
    (lambda: TrainConfig(aux_start=float("nan")), "aux_start"),
    (lambda: TrainConfig(lr=float("inf")), "lr"),
    (lambda: ModelConfig(input_dim=3, logvar_clamp=float("nan")), "logvar_clamp"),
    (lambda: DataConfig(options={"threshold": float("nan")}), "option threshold"),
])
def test_config_dataclasses_refuse_non_finite_numbers_by_field_name(make, field):
    with pytest.raises(ValueError, match=f"^{field} must be a finite number"):
        make()


@pytest.mark.parametrize("content,needle", [
    ('{"variants": ["aux"], "aux_weight": NaN}', "NaN is not a finite number"),
    ('{"variants": {"x": {"aux_weight": Infinity}}}', "Infinity is not a finite number"),
    ('{"variants": ["aux"], "seeds": "three"}', "seeds: expected a whole number"),
    ('{"variants": ["aux"], "seeds": 0}', "seeds: must be >= 1"),
    ('{"variants": ["aux"], "lr": [1]}', "lr: expected a single value"),
    ('{"variants": ["aux"], "dataset": "nope"}', "dataset: must be one of"),
    ('{"variants": ["aux"], "validate": 1}', "validate: expected true or false"),
])
def test_study_file_values_are_checked_like_the_flags(tmp_path, content, needle):
    study = tmp_path / "study.json"
    study.write_text(content)
    code, err = main_with_stderr(["ablate", "--study", str(study), "--study-dir", str(tmp_path / "s")])
    assert_one_line_error(code, err, str(study), needle)


@pytest.mark.parametrize("option,needle", [
    ("threshold=abc", "option threshold must be a number in [0, 16), got 'abc'"),
    ("threshold=16", "option threshold"),
    ("rows=3", "option rows"),
])
def test_digits_options_are_checked_by_name(tmp_path, option, needle):
    code, err = main_with_stderr(["--data-option", option, "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("dataset", ["text", "audio"])
@pytest.mark.parametrize("value", ["-0.1", "1", "abc"])
def test_valid_fraction_outside_0_1_is_a_one_line_error_naming_it(tmp_path, dataset, value):
    (tmp_path / "data").mkdir()
    code, err = main_with_stderr(["--dataset", dataset, "--data-dir", str(tmp_path / "data"), "--data-option",
                                  f"valid_fraction={value}", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, f"{dataset}: option valid_fraction must be a number in [0, 1)")


def test_training_without_a_validation_split_is_a_one_line_error(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line number {i} here\n" for i in range(40)))
    code, err = main_with_stderr(["--dataset", "text", "--data-dir", str(corpus), "--data-option", "valid_fraction=0",
                                  "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "validation split is empty (data option valid_fraction 0)")


def test_a_model_too_large_for_memory_is_refused_before_allocation_with_the_estimate(tmp_path):
    code, err = main_with_stderr(["--rnn-dim", "10000000", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "rnn_dim 10000000", "PB of parameters", "more than the")
    assert not (tmp_path / "run").exists()
    config = ModelConfig(input_dim=5, emission="categorical", emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5)
    real = sum(p.numel() for p in build_objective(config, "backward").parameters())
    assert parameter_count(config, "backward") == real  # counted on the meta device, exactly
    with pytest.raises(ValueError, match="activations for a batch of 10 x 10000000000 steps"):
        check_training_fits(config, guide="backward", batch_size=10, steps=10**10, step_size=1)
    check_training_fits(config, guide="backward", batch_size=10, steps=100, step_size=1)  # fits: no error


def test_a_text_line_of_a_million_words_is_refused_not_allocated(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"short line {i} here\n" for i in range(60)) + " ".join(["word"] * 1_000_000) + "\n")
    code, err = main_with_stderr(["--dataset", "text", "--data-dir", str(corpus), "--data-option",
                                  "max_length=2000000", "--cache-dir", str(tmp_path / "cache"),
                                  "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "x 1000001 steps", "of activations", "more than the")


# ----------------------------------------------------------------------------- fuzzing

def text_without(*forbidden):
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.:", min_size=1, max_size=12).filter(
        lambda s: s not in forbidden and not s.startswith("cpu") and s != "auto")


NOT_A_NUMBER = st.sampled_from(["nan", "inf", "-inf", "abc", "", "1,5", "0x10", "--"])
NEGATIVE = st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False).map(repr)
NOT_POSITIVE_INT = st.integers(max_value=0).map(str) | st.sampled_from(["1.5", "abc", "", "nan", "1e3", "--"])
BAD_VALUES = {
    "--lr": NOT_A_NUMBER | NEGATIVE | st.just("0"),
    "--clip-norm": NOT_A_NUMBER | NEGATIVE | st.just("0"),
    "--kl-start": NOT_A_NUMBER | NEGATIVE | st.floats(min_value=1.001, allow_infinity=False).map(repr),
    "--aux-weight": NOT_A_NUMBER | NEGATIVE,
    "--aux-step": NOT_A_NUMBER | NEGATIVE,
    "--kl-step": NOT_A_NUMBER | NEGATIVE,
    "--bwd-weight": NOT_A_NUMBER | NEGATIVE,
    "--batch-size": NOT_POSITIVE_INT,
    "--epochs": NOT_POSITIVE_INT,
    "--max-steps": NOT_POSITIVE_INT,
    "--rnn-dim": NOT_POSITIVE_INT,
    "--z-dim": NOT_POSITIVE_INT,
    "--patience": NOT_POSITIVE_INT,
    "--lr-patience": NOT_POSITIVE_INT,
    "--min-epochs": st.integers(max_value=-1).map(str) | st.sampled_from(["1.5", "abc", "", "nan"]),
    "--lr-decay": NOT_A_NUMBER | NEGATIVE | st.just("0") | st.floats(min_value=1.001, allow_infinity=False).map(repr),
    "--seed": st.integers(max_value=-1).map(str) | st.integers(min_value=2**32).map(str) | NOT_A_NUMBER,
    "--guide": text_without(*GUIDES).filter(lambda s: ":" not in s),
    "--dataset": text_without("digits", "mnist", "timit", "blizzard", "audio", "text", "imdb", "arrays", "polyphonic"),
    "--aux-input": text_without("hz", "z"),
    "--device": st.sampled_from(["tpu", "cuda:99", "gpu", "cpu:x", "", "meta", "cuda:-1"]),
    "--data-option": text_without().filter(lambda s: "=" not in s) | st.sampled_from(["threshold=nan", "k=inf"]),
}
EVALUATE_BAD = {
    "--iwae-samples": NOT_POSITIVE_INT,
    "--batch-size": NOT_POSITIVE_INT,
    "--split": text_without("train", "valid", "test"),
    "--seed": st.integers(max_value=-1).map(str) | NOT_A_NUMBER,
}


@st.composite
def bad_command_lines(draw):
    """A command line with at least one bad flag value (``--flag=value``), maybe after good flags."""
    command = draw(st.sampled_from(["", "train", "evaluate"]))
    table = EVALUATE_BAD if command == "evaluate" else BAD_VALUES
    flags = draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True))
    argv = [command] if command else []
    if command == "evaluate":
        argv += ["--checkpoint", "/nonexistent/checkpoint.pt"]
    if draw(st.booleans()):
        argv += ["--quiet"]
    return argv + [f"{flag}={draw(table[flag])}" for flag in flags]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=bad_command_lines())
def test_fuzzed_bad_flags_exit_2_with_one_line_and_no_traceback(tmp_path, argv):
    if argv and argv[0] != "evaluate":
        argv = argv + ["--out", str(tmp_path / "run")]
    code, err = main_with_stderr(argv)
    assert code == 2, (argv, err)
    assert "Traceback" not in err and err.count("\n") == 1 and "error" in err, (argv, err)
    assert not (tmp_path / "run").exists(), argv


def huge_requests(seed):
    """The issue's two requests that cannot finish, and generated ones of other huge sizes."""
    rng = np.random.default_rng(seed)
    seeds, k = int(rng.integers(10_001, 10**9)), int(rng.integers(1_000_001, 10**9))
    return [({"seeds": 100_000_000}, None), ({"seeds": seeds}, None), (None, ["--iwae-samples", "30000000",
                                                                             "--iwae-chunk", "1000"]),
            (None, ["--iwae-samples", str(k)])]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_study_or_an_evaluation_that_cannot_finish_is_refused_before_it_starts(tmp_path, seed, monkeypatch):
    import json as json_module

    from pyro_zforcing.cli import evaluate, study

    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(study, "run_study", no_work)
    monkeypatch.setattr(study, "load_dataset", no_work)
    monkeypatch.setattr(evaluate, "load_for", no_work)
    for file_values, flags in huge_requests(seed):
        if file_values is not None:
            path = tmp_path / "study.json"
            path.write_text(json_module.dumps({"variants": ["no-aux"], **file_values}))
            argv = ["ablate", "--study", str(path), "--study-dir", str(tmp_path / "s"), "--quiet"]
            needle = "runs: each trains and evaluates a model, so this study cannot finish"
        else:
            argv = ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), *flags, "--quiet"]
            needle = "cannot finish; at most 1,000,000"
        code, err = main_with_stderr(argv)
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
        assert needle in err, err
        assert not (tmp_path / "s").exists()
