"""The documentation cannot go stale: every Python block of README.md and docs/ runs, the site
builds with warnings and broken cross-references as errors, the README's links and the API
reference's module list match the repository."""

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# docs/_build is the built site and docs/studies the study files and saved tables (conf.py's exclude_patterns)
PAGES = [ROOT / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if not {"_build", "studies"} & set(p.relative_to(DOCS).parts))
FENCE = re.compile(r"^(`{3,})([^`\n]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
PYTHON_LANGUAGES = {"python", "py", "python3", "pycon", "ipython"}


def code_blocks(path: Path):
    """(language, first line number, code) of every fenced block of a Markdown page."""
    text = path.read_text()
    for match in FENCE.finditer(text):
        language = match.group(2).strip().split(" ")[0]
        yield language, text.count("\n", 0, match.start(3)) + 1, match.group(3)


def python_blocks(path: Path):
    return [(line, code) for language, line, code in code_blocks(path) if language == "python"]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# Pages whose blocks a test of their own runs, with the commands between them and checks of
# what they write: not run twice.
RUN_BY_THEIR_OWN_TEST = {"docs/your-data.md": "tests/test_docs_pages.py", "docs/pyro-tools.md": "tests/test_docs_pages.py",
                         "docs/polyphonic.md": "tests/test_polyphonic_table.py"}  # that one reads ../shared/data
PAGES_WITH_PYTHON = [page for page in PAGES if python_blocks(page) and relative(page) not in RUN_BY_THEIR_OWN_TEST]

# What a page's blocks must print, beyond running: (pattern, check of the matched numbers).
EXPECTED_OUTPUT = {
    "README.md": [
        (r"IWAE\(25\) (-?\d+\.\d+) nats per image", lambda iwae: -60 < iwae < 0),  # 64 binary pixels
        (r"^z LatentTrajectory \(4, 64, 16\)$", None),
        (r"^x MaskedEmission \(4, 64, 1\)$", None),
    ],
    "docs/python.md": [
        (r"^1297 250 250 bernoulli 1$", None),
        (r"ELBO (-?\d+\.\d+), IWAE\(25\) (-?\d+\.\d+), KL (\d+\.\d+) nats per image",
         lambda elbo, iwae, kl: -60 < elbo <= iwae < 0 and kl >= 0),
        (r"custom guide: ELBO (-?\d+\.\d+), IWAE (-?\d+\.\d+)", lambda elbo, iwae: -60 < elbo <= iwae < 0),
    ],
}


def test_every_python_block_is_marked_python():
    """A block in another Python dialect's fence would escape the test below."""
    for page in PAGES:
        for language, line, _ in code_blocks(page):
            assert language == "python" or language not in PYTHON_LANGUAGES, \
                f"{relative(page)}:{line}: fence the block as python (or as bash if it is a command)"
    assert ROOT / "README.md" in PAGES_WITH_PYTHON


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=relative)
def test_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    """The blocks of one page run in order in one namespace, as a reader pasting them would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the blocks' mkdtemp() runs land here
    namespace = {"__name__": "docs_example"}
    for line, code in python_blocks(page):
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    out = capsys.readouterr().out
    for pattern, check in EXPECTED_OUTPUT.get(relative(page), []):
        match = re.search(pattern, out, re.M)
        assert match, f"{relative(page)}: no output matching {pattern!r} in:\n{out}"
        if check is not None:
            assert check(*(float(value) for value in match.groups())), match.group(0)


def test_expected_outputs_name_pages_that_have_python_blocks():
    assert set(EXPECTED_OUTPUT) <= {relative(page) for page in PAGES_WITH_PYTHON}


def test_pages_left_to_their_own_test_are_run_there():
    for page, test in RUN_BY_THEIR_OWN_TEST.items():
        assert python_blocks(ROOT / page), f"{page} has no Python block left: drop it from RUN_BY_THEIR_OWN_TEST"
        assert Path(page).name in (ROOT / test).read_text(), f"{test} does not run {page}"


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MyST's heading anchors) give a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_readme_links_point_at_files_and_headings_that_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README.md links to {link}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {github_slug(h) for h in headings}, f"README.md: no heading #{anchor} in {target}"


def package_modules():
    package = importlib.import_module("pyro_zforcing")
    names = {"pyro_zforcing"}
    for info in pkgutil.walk_packages(package.__path__, prefix="pyro_zforcing."):
        names.add(info.name)
    return names - {"pyro_zforcing.__main__"}  # importing it runs the program


def test_the_api_reference_documents_every_module():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)$", page.read_text(), re.M))
    missing = package_modules() - documented - {"pyro_zforcing"}
    assert not missing, f"add an automodule line to its layer's page under docs/api/ for: {sorted(missing)}"
    assert documented <= package_modules(), f"docs/api/ names modules that do not exist: {documented - package_modules()}"


def sphinx_or_skip():
    """Sphinx, MyST and the theme; under CI (which installs the docs extra) their absence fails."""
    try:
        for name in ("sphinx", "myst_parser", "furo"):
            importlib.import_module(name)
    except ImportError as error:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI installs the docs extra (pip install -e '.[dev]'): {error}") from None
        pytest.skip(f"the docs extra is not installed ({error}; pip install -e '.[docs]')")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once for this module: -W (warnings are errors), -n (so are broken references)."""
    sphinx_or_skip()
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-q", "-b", "html",
                           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return done, out / "html"


def test_the_site_builds_with_warnings_and_broken_references_as_errors(site):
    done, html = site
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr[-6000:]
    for page in PAGES[1:]:
        built = html / page.relative_to(DOCS).with_suffix(".html")
        assert built.is_file(), f"{relative(page)} is not in the site: add it to a toctree"


def test_every_flag_of_every_command_has_an_anchor_in_the_site(site):
    from pyro_zforcing.cli.evaluate import evaluate_parser
    from pyro_zforcing.cli.plot import plot_parser
    from pyro_zforcing.cli.sample import sample_parser
    from pyro_zforcing.cli.study import ablate_parser, compare_parser
    from pyro_zforcing.cli.train import train_parser

    done, html = site
    assert done.returncode == 0, done.stderr[-6000:]
    ids = set(re.findall(r'id="(cmdoption-[^"]+)"', (html / "cli.html").read_text()))
    for parser, program in [(train_parser(), "zforcing-train"), (evaluate_parser(), "zforcing-evaluate"),
                            (sample_parser(), "zforcing-sample"), (plot_parser(), "zforcing-plot"),
                            (ablate_parser(), "zforcing-ablate"), (compare_parser(), "zforcing-compare")]:
        for action in parser._actions:
            anchors = [f"cmdoption-{program}-{option.lstrip('-')}" for option in action.option_strings
                       if option not in ("-h", "--help")]
            if not action.option_strings:  # a positional argument
                anchors = [f"cmdoption-{program}-arg-{action.metavar or action.dest}"]
            for anchor in anchors:
                assert anchor in ids, f"{program}: no anchor {anchor} in cli.html"


def test_every_row_of_the_fidelity_table_has_an_anchor(site):
    done, html = site
    assert done.returncode == 0, done.stderr[-6000:]
    rows = re.findall(r"^\| \{anchor\}`(\d+) <fidelity-(\d+)>` \|", (DOCS / "fidelity.md").read_text(), re.M)
    assert rows and all(a == b for a, b in rows) and [int(a) for a, _ in rows] == list(range(1, len(rows) + 1))
    built = (html / "fidelity.html").read_text()
    for number, _ in rows:
        assert f'id="fidelity-{number}"' in built and f'href="#fidelity-{number}"' in built


def docs_extension():
    sphinx_or_skip()
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return importlib.import_module("zforcing_docs")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_plain_text_docstrings_become_the_restructuredtext_they_mean():
    rst = docs_extension().plain_text_to_rst
    equations = ["For targets y_1..y_T:", "", "    z_t ~ p(z_t | h_{t-1})", "        (continued)", "",
                 "Training minimises", "", "    -ELBO", "", "after"]
    assert rst(equations) == ["For targets y_1..y_T::", "", "    z_t ~ p(z_t | h_{t-1})", "        (continued)", "",
                              "Training minimises", "", "::", "", "    -ELBO", "", "after"]
    listed = ["Reading:", "- one", "  continued", "- two", "Every failure is an error."]
    assert rst(listed) == ["Reading:", "", "- one", "  continued", "- two", "", "Every failure is an error."]
    nested = ["- a file holding", "  * one array", "    per sequence; or", "  * a padded array", "- a folder", "Then."]
    assert rst(nested) == ["- a file holding", "", "  * one array", "    per sequence; or", "  * a padded array", "",
                           "- a folder", "", "Then."]
    assert rst(["|error| < max, ``|x|`` as written, **KL**(q || p)"]) == \
        [r"\|error\| < max, ``|x|`` as written, **KL**\ (q || p)"]
    already = ["A recipe::", "", "    dataset = 'timit'", "", ".. note::", "", "    kept", "", "- item", "",
               "  second paragraph of the item", "", "p(z | h) and q(z || p) stay"]
    assert rst(already) == already


def test_every_figure_a_page_shows_is_in_the_repository():
    """A fresh clone has every figure (none is a local build output the site would miss)."""
    tracked = set(subprocess.run(["git", "ls-files", "docs"], capture_output=True, text=True, cwd=ROOT,
                                 check=True).stdout.split())
    figures = [(page, target) for page in PAGES[1:]
               for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())]
    assert figures
    for page, target in figures:
        path = (page.parent / target).resolve().relative_to(ROOT)
        assert str(path) in tracked, f"{relative(page)} shows {target}, which git does not track"


OUTPUT_PAGES = {"compare.md", "study.md", "eval-test.md"}  # written by compare, ablate and evaluate


def test_every_markdown_file_a_page_names_is_in_the_repository_or_an_output():
    """A page never sends a reader to a document the repository does not have (the design notes the
    project was built from are not part of it): a named `*.md` is tracked, or one a command writes."""
    tracked = {Path(p).name for p in subprocess.run(["git", "ls-files"], capture_output=True, text=True,
                                                    cwd=ROOT, check=True).stdout.split()}
    named = {(relative(page), Path(name).name) for page in PAGES
             for name in re.findall(r"`([\w./-]+\.md)`", page.read_text())}
    assert named
    for page, name in named:
        assert name in tracked or name in OUTPUT_PAGES, f"{page} names {name}, which the repository does not have"


def jsb_table():
    """{model: (ELBO, IWAE)} of the README's JSB Chorales table, one entry per variant (`a / b` rows)."""
    text = (ROOT / "README.md").read_text().split("**A published benchmark, JSB Chorales**")[1]
    table = next(block for block in text.split("\n\n") if block.startswith("| model"))
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [n.strip().split()[0].strip("`*") for n in cells[0].split("/")]
        columns = [[float(v.strip("* ")) for v in c.split("/")] for c in cells[1:3]]
        for i, name in enumerate(names):
            rows[name] = (columns[0][i], columns[1][i])
    return rows


def test_readme_states_the_jsb_gaps_to_the_rnn_that_its_table_shows():
    rows = jsb_table()
    rnn = rows.pop("rnn")
    assert len(rows) == 6  # five latent models, Z-Forcing with and without aux
    text = " ".join((ROOT / "README.md").read_text().split())
    claim = re.search(r"beats the RNN by ([\d.]+)-([\d.]+) nats per step in the ELBO \(([\d.]+)-([\d.]+)\) "
                      r"and by ([\d.]+)-([\d.]+) in IWAE\(25\)", text)
    assert claim, "README.md: the sentence on the gaps to the RNN changed; update this test"
    low, high, elbo_low, elbo_high, iwae_low, iwae_high = map(float, claim.groups())
    for column, (lo, hi) in enumerate(((elbo_low, elbo_high), (iwae_low, iwae_high))):
        gaps = [values[column] - rnn[column] for values in rows.values()]
        assert (round(min(gaps), 2), round(max(gaps), 2)) == (lo, hi), gaps
    assert (round(elbo_low, 1), round(elbo_high, 1)) == (low, high)
