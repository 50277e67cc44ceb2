"""Sphinx configuration of the pyro-zforcing documentation (Markdown pages via MyST, the API
reference from the docstrings via autodoc, the command-line reference from the argparse parsers).

Build: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html`` (warnings and broken
cross-references are errors). Nothing is fetched at build time.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

import pyro_zforcing  # noqa: E402  (the package of this checkout, found through the path above)

project = "pyro-zforcing"
author = "the pyro-zforcing developers"
copyright = "the pyro-zforcing developers"
release = version = pyro_zforcing.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "zforcing_docs",  # docs/_ext/zforcing_docs.py: linkable table rows, the flags of each command, docstrings
]

smartquotes_action = "qe"  # quotes and ellipses only: --flag stays two hyphens
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "studies"]
root_doc = "index"

# MyST: headings up to level 3 get anchors (page.md#heading links are checked), ::: fences.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Docstrings are reStructuredText: ``code`` literals, :func:/:class:/:mod: roles relative to the
# module being documented. A lone `x` (the default role) reads as code, as in the Markdown pages.
default_role = "literal"
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource",
                           "show-inheritance": True, "no-value": True,
                           "special-members": "__call__"}  # a model's __call__ (draws x when unobserved)
autodoc_inherit_docstrings = False  # torch's and pyro's docstrings are theirs (and not all render here)
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
add_module_names = False
python_use_unqualified_type_names = True

# Broken cross-references fail the build (-n). Types from other projects cannot be resolved
# without their inventories, which are not fetched (no network at build time): those are ignored
# by pattern (so are the standard library's), so every reference into this package is checked.
nitpicky = True
STDLIB = getattr(sys, "stdlib_module_names", (  # Python 3.10+; below, the modules our signatures name
    "abc", "argparse", "collections", "contextlib", "csv", "dataclasses", "enum", "fcntl", "io", "json",
    "logging", "os", "pathlib", "pickle", "signal", "subprocess", "threading", "types", "typing", "zipfile"))
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|pyro|np|numpy|nn|F|dist|scipy|matplotlib|sklearn|soundfile|tqdm|tomllib|tomli)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Distribution|TorchDistribution|Messenger|Trace|ArgumentParser|Namespace)"),
    (r"py:.*", rf"({'|'.join(sorted(STDLIB))})\..*"),
    (r"py:class", r"(Path|PathLike|Callable|Iterable|Iterator|Sequence|Mapping|MutableMapping|Generator|"
                  r"ContextManager|TextIO|BinaryIO|IO|Any|Union|Optional|Tuple|List|Dict|Set|FrozenSet|Type|"
                  r"NamedTuple|Enum|Event|Lock|Popen|FrameType)"),
]

html_theme = "furo"
html_title = f"pyro-zforcing {release}"
html_static_path = []
