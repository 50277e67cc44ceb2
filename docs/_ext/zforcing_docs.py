"""What the pyro-zforcing pages need beyond Sphinx and MyST.

- ``{anchor}`TEXT <NAME>``` (``:anchor:`TEXT <NAME>``` in reStructuredText) puts a link target
  named NAME where it stands and shows TEXT as a link to it, so a row of a table can be linked
  to (``fidelity.html#fidelity-14``) and cross-referenced (``{ref}`row 14 <fidelity-14>```).
- The package's docstrings are written to read as plain text in the source: equations and
  commands as indented blocks, lists straight after their introducing line, ``|x|`` for an
  absolute value. :func:`plain_text_to_rst` turns those idioms into the reStructuredText that
  renders them as meant (literal blocks, lists, literal pipes) before autodoc parses them.
- ``{command-flags} MODULE:FUNCTION`` renders the argparse parser that FUNCTION returns: its
  usage, description and every flag as a Sphinx ``option`` (so each flag has an anchor, an
  index entry, and is cross-referenced as ``{option}`zforcing train --kl-step```). The page is
  the parser: a flag added to the code is in the documentation at the next build.
- A role in a docstring names its target the way the code does: ``:class:`DataError``` in a
  module that imports ``DataError``, ``:meth:`requested``` for a method of the module's class.
  :func:`resolve_like_python` resolves such a reference through the module's own namespace, then
  by a unique match of the name's ending among the documented objects; anything else stays a
  broken reference (an error under ``-n -W``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import typing
from typing import List, Optional

from docutils import nodes
from docutils.statemachine import StringList
from docutils.utils import unescape
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import split_explicit_title


def anchor_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    has_title, title, target = split_explicit_title(unescape(text))
    if not has_title:
        title = target
    node_id = nodes.make_id(target)
    if node_id != target:
        message = inliner.reporter.error(f"anchor {target!r}: use lower-case letters, digits and hyphens "
                                         f"({node_id!r})", line=lineno)
        return [inliner.problematic(rawtext, rawtext, message)], [message]
    anchor = nodes.target("", "", ids=[node_id], names=[target])
    inliner.document.note_explicit_target(anchor)
    link = nodes.reference(rawtext, title, refid=node_id, classes=["row-anchor"])
    return [anchor, link], []


LIST_ITEM = re.compile(r"(\s*)(?:[-*+]|\d+[.)]) +\S")
LITERAL = re.compile(r"``.+?``")
SUBSTITUTION_LIKE = re.compile(r"(?<![\w\\|])\|(?=[^\s|])([^|`]*?[^\s|\\])\|(?![\w|])")
STRONG_THEN_WORD = re.compile(r"(\*\*[^*\s](?:[^*]*?[^*\s])?\*\*)(?=[\w(\[{])")


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def outside_literals(line: str, edit) -> str:
    """``line`` with ``edit`` applied to the text between ````literal```` spans only."""
    pieces, last = [], 0
    for match in LITERAL.finditer(line):
        pieces += [edit(line[last:match.start()]), match.group(0)]
        last = match.end()
    return "".join(pieces + [edit(line[last:])])


def inline_fixes(text: str) -> str:
    text = SUBSTITUTION_LIKE.sub(r"\\|\1\\|", text)  # |error| is an absolute value, not a substitution
    return STRONG_THEN_WORD.sub(r"\1\\ ", text)  # **KL**(q || p): end the strong text before the word


def plain_text_to_rst(lines: List[str]) -> List[str]:
    """Docstring lines (dedented, as autodoc gives them) with the plain-text idioms made explicit:

    - an indented block after a blank line, following a paragraph, is a literal block (the
      paragraph's closing ``:`` becomes ``::``, or a ``::`` line is put before the block);
    - a list straight after its introducing line gets the blank line reStructuredText needs
      before it, and the text straight after a list the blank line it needs after it;
    - ``|x|`` outside ````literals```` is a literal ``|x|``, and ``**strong**`` directly
      followed by a word is closed before it.

    What is already reStructuredText (a paragraph ending in ``::``, a directive, a field list,
    the blocks of a list item) is left as it is.
    """
    out: List[str] = []
    paragraph: List[int] = []  # indices in out of the lines of the paragraph being read
    finished: List[int] = []  # ... of the paragraph a blank line just ended
    lists: List[int] = []  # marker indents of the lists being read, outermost first
    literal_indent: Optional[int] = None  # indent of the paragraph that introduced a literal block
    for line in lines:
        if not line.strip():
            out.append(line)
            if paragraph:
                finished, paragraph = paragraph, []
            continue
        indent = indent_of(line)
        if literal_indent is not None:
            if indent > literal_indent:
                out.append(line)
                continue
            literal_indent, finished = None, []
        item = LIST_ITEM.match(line)
        closed = False
        while lists and (indent < lists[-1] or (indent == lists[-1] and not item)):
            lists.pop()  # the line is outside the innermost list
            closed = True
        if closed and paragraph:
            out.append("")  # text, or an outer list's next item, straight after a list
            paragraph = []
        if item and (not lists or indent > lists[-1]):
            if paragraph:
                out.append("")  # a list (or a sublist) straight after its introducing line
                paragraph = []
            lists.append(indent)
        if not paragraph and finished and not lists and introduces_literal(out, finished, indent):
            opener = finished[-1]
            if out[opener].rstrip().endswith(":"):
                out[opener] = out[opener].rstrip() + ":"
            else:
                out[-1:] = ["", "::", ""]
            literal_indent = indent_of(out[finished[0]])
            out.append(line)
            finished = []
            continue
        finished = []
        paragraph.append(len(out))
        out.append(outside_literals(line, inline_fixes))
    return out


def introduces_literal(out: List[str], paragraph: List[int], indent: int) -> bool:
    """Whether the plain paragraph at ``paragraph`` (indices in ``out``) introduces a block of ``indent``."""
    first, last = out[paragraph[0]], out[paragraph[-1]]
    return (indent > indent_of(first) and not last.rstrip().endswith("::")
            and not first.lstrip().startswith((".. ", ":")) and not LIST_ITEM.match(first))


def normalise_docstring(app, what, name, obj, options, lines):
    if what in ("data", "attribute") and lines and type(obj).__doc__ and (
            "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__).strip()):
        lines[:] = []  # a registry dict documented on its page is not the documentation of dict
    lines[:] = plain_text_to_rst(lines)


def import_dotted(path: str):
    """The object of a full dotted name (``package.module.Class.attr``), or None."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
        return obj
    return None


def drop_object_base(app, name, obj, options, bases):
    bases[:] = [base for base in bases if base is not object]  # "Bases: object" says nothing


def lookup(path: str, module: Optional[str], cls: Optional[str]):
    """The object ``path`` names inside ``module`` (and its class ``cls``), as the code sees it,
    or the object of ``path`` as a full dotted name."""
    scope = import_dotted(module) if module else None
    if scope is None:
        return import_dotted(path)
    scopes = [scope]
    if cls:
        owner = scope
        for part in cls.split("."):
            owner = getattr(owner, part, None)
        if owner is not None:
            scopes.insert(0, owner)
    for scope in scopes:
        obj = scope
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return import_dotted(path)


def objects_ending_with(env, domain) -> dict:
    """The documented Python objects by the last part of their names (built once per resolution pass)."""
    index = getattr(env, "_zforcing_objects_by_last_name", None)
    if index is None or index[0] != len(domain.objects):
        by_name: dict = {}
        for name in domain.objects:
            by_name.setdefault(name.rpartition(".")[2], []).append(name)
        index = env._zforcing_objects_by_last_name = (len(domain.objects), by_name)
    return index[1]


def resolve_like_python(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip("~.")
    module, cls = node.get("py:module"), node.get("py:class")
    obj = lookup(target, module, cls)
    if isinstance(obj, typing.TypeVar):
        return contnode  # a type variable of a signature: nothing to link to
    candidates = []
    if obj is not None and getattr(obj, "__module__", None) and getattr(obj, "__qualname__", None):
        candidates.append(f"{obj.__module__}.{obj.__qualname__}")
    if cls:
        candidates.append(f"{module}.{cls}.{target}")
    for name in candidates:
        if name in domain.objects:
            return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", name, node, contnode)
    matches = objects_ending_with(env, domain).get(target.rpartition(".")[2], [])
    matches = [name for name in matches if name == target or name.endswith("." + target)]
    if len(matches) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", matches[0], node, contnode)
    return None


MARKDOWN_SPECIAL = re.compile(r"([\\*_|\[\]<>{}])")


def markdown_text(text: str) -> str:
    """Plain help text as MyST Markdown: `quoted` spans stay code, the rest is escaped."""
    pieces = text.split("`")
    return "".join(f"`{piece}`" if i % 2 else MARKDOWN_SPECIAL.sub(r"\\\1", piece)
                   for i, piece in enumerate(pieces) if piece)


def program_name(parser: argparse.ArgumentParser) -> str:
    """``zforcing [train]`` -> ``zforcing train``: the name the pages give the command."""
    return re.sub(r"\s+", " ", parser.prog.replace("[", "").replace("]", "")).strip()


def option_signature(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if not action.option_strings:
        return formatter._metavar_formatter(action, action.dest)(1)[0]
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = formatter._format_args(action, action.dest.upper())
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def command_markdown(parser: argparse.ArgumentParser) -> List[str]:
    """The MyST Markdown of one command: usage, description, each group's flags as options."""
    formatter = parser.formatter_class(prog=parser.prog, width=96)  # not the terminal's width
    usage = parser.formatter_class(prog=parser.prog, width=96)
    usage.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    lines = [f"```{{program}} {program_name(parser)}", "```", "", "```text", usage.format_help().rstrip(), "```", ""]
    if parser.description:
        if isinstance(formatter, argparse.RawDescriptionHelpFormatter):
            lines += ["```text", parser.description, "```", ""]
        else:
            lines += [markdown_text(parser.description), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"```{{rubric}} {group.title.capitalize()}", "```", ""]
        for action in actions:
            signature = option_signature(action, formatter)
            help_text = formatter._expand_help(action) if action.help else ""
            if action.choices is not None and "{" not in signature:
                help_text += f" (one of {', '.join(map(str, action.choices))})"
            lines += [f"```{{option}} {signature}", markdown_text(help_text.strip()), "```", ""]
    return lines


class CommandFlags(SphinxDirective):
    """``{command-flags} module:function`` (in a Markdown page): the parser ``function()`` returns."""

    required_arguments = 1
    has_content = False

    def run(self):
        module, _, function = self.arguments[0].partition(":")
        parser = getattr(importlib.import_module(module), function)()
        container = nodes.container(classes=["command-flags"])
        self.state.nested_parse(StringList(command_markdown(parser), source=f"<{self.arguments[0]}>"), 0, container)
        return container.children


def setup(app):
    app.add_role("anchor", anchor_role)
    app.add_directive("command-flags", CommandFlags)
    app.connect("autodoc-process-docstring", normalise_docstring)
    app.connect("autodoc-process-bases", drop_object_base)
    app.connect("missing-reference", resolve_like_python)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
