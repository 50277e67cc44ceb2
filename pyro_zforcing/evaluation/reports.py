"""A report's two files: ``<name>-<split>.json`` and its markdown ``<name>-<split>.md``.

:func:`write_report` writes the JSON, then the markdown rendered from it (:func:`renderer`:
:func:`.bounds.markdown_table`, or :func:`.paper_protocol.markdown_lines` for ``eval_paper``),
each atomically. The markdown names the checkpoint and training step the report scores, and its
last line holds the SHA-256 of the JSON it was rendered from: a kill between the two writes
leaves a pair that disagrees, which :func:`repair_reports` finds and renders again (``evaluate``
and ``plot`` do so before anything else in the folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Dict, List

from ..files import JSONFileError, read_json, write_atomic
from .bounds import markdown_table
from .paper_protocol import markdown_lines

log = logging.getLogger(__name__)

STEMS = ("eval", "eval_paper")
SPLITS = ("train", "valid", "test")
FINGERPRINT = re.compile(r"<!-- rendered from (?P<name>\S+), sha256 (?P<digest>[0-9a-f]{64}) -->\s*$")


def report_name(split: str, stem: str = "eval") -> str:
    """``<stem>-<split>``: the stem of a split's report files, so splits never overwrite each other."""
    return f"{stem}-{split}"


def renderer(stem: str):
    """The markdown renderer of the reports named ``<stem>-<split>``."""
    return markdown_lines if stem == "eval_paper" else markdown_table


def checkpoint_note(report: Dict) -> str:
    """``CHECKPOINT, step N, epoch E``: which trained model a report scores ("" if it does not say)."""
    if "checkpoint" not in report:
        return ""
    step = f", step {report['checkpoint_step']}" if report.get("checkpoint_step") is not None else ""
    epoch = f", epoch {report['checkpoint_epoch']}" if report.get("checkpoint_epoch") is not None else ""
    return f"{report['checkpoint']}{step}{epoch}"


def render(stem: str, report: Dict) -> str:
    """The markdown of ``report``: its table, then which checkpoint and step it scores."""
    scored = checkpoint_note(report)
    return renderer(stem)(report) + (f"\nScored: {scored}.\n" if scored else "")


def write_report(result, out_dir, *, name: str = "eval") -> Dict:
    """Write ``<name>-<split>.json`` (``result.to_dict()``) and ``<name>-<split>.md`` (:func:`render`
    of it, ending with the JSON's SHA-256; split from ``result.meta``, default test) into
    ``out_dir``; returns the report dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = result.to_dict()
    stem = report_name(report.setdefault("split", "test"), name)
    text = json.dumps(report, indent=1) + "\n"
    write_atomic(out_dir / f"{stem}.json", text)
    write_atomic(out_dir / f"{stem}.md", render(name, report) + fingerprint(f"{stem}.json", text))
    return report


def fingerprint(name: str, text: str) -> str:
    """The last line of a report's markdown: the JSON file it was rendered from and its SHA-256."""
    return f"\n<!-- rendered from {name}, sha256 {hashlib.sha256(text.encode('utf-8')).hexdigest()} -->\n"


def repair_reports(out_dir) -> List[Path]:
    """Render again every report markdown of ``out_dir`` that is missing or was not rendered from
    its JSON as it is now (a kill between the two writes of :func:`write_report`); returns them.
    A JSON that cannot be read is left alone, with a warning."""
    repaired = []
    for path in sorted(Path(out_dir).glob("eval*-*.json")):
        stem, _, split = path.stem.partition("-")
        if stem not in STEMS or split not in SPLITS:
            continue
        markdown = path.with_suffix(".md")
        try:
            text = path.read_text(encoding="utf-8")
            old = markdown.read_text(encoding="utf-8") if markdown.exists() else ""
        except (OSError, UnicodeDecodeError):
            continue
        match = FINGERPRINT.search(old)
        if match and match["digest"] == hashlib.sha256(text.encode("utf-8")).hexdigest():
            continue
        try:
            rendered = render(stem, read_json(path))
        except (JSONFileError, KeyError, TypeError, ValueError) as error:
            log.info("%s: not repaired, its report cannot be read: %s", markdown, error)
            continue
        write_atomic(markdown, rendered + fingerprint(path.name, text))
        log.warning("%s did not match %s (a write was interrupted): rendered it again", markdown, path)
        repaired.append(markdown)
    return repaired
