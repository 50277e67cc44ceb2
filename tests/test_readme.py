"""The README's Python API example runs as written (so it cannot go stale)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_block() -> str:
    text = README.read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = python_api_block()
    assert "Trainer.create" in code and "evaluate_split" in code and "pyro.sample(\"z\"" in code
    namespace = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    iwae = float(re.search(r"IWAE\(25\) (-?\d+\.\d+) nats per image", out).group(1))
    elbo, custom_iwae = (float(v) for v in re.search(r"custom guide: ELBO (-?\d+\.\d+), IWAE (-?\d+\.\d+)", out).groups())
    assert -60 < iwae < 0 and custom_iwae >= elbo  # log-probabilities of 64 binary pixels; IWAE >= ELBO
