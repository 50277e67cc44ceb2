"""``zforcing evaluate``: per-sequence bounds of a split from a checkpoint, in our protocol and the authors'."""

from __future__ import annotations

import argparse
import logging
from typing import List

from ..evaluation.bounds import check_iwae_samples, evaluate_split, markdown_table
from ..evaluation.paper_protocol import evaluate_paper, markdown_lines
from ..evaluation.reports import checkpoint_note, repair_reports, report_name, write_report
from .common import PROG, Parser, add_checkpoint_flags, checked_out, checkpoint_position, load_for, positive_int


def evaluate_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} evaluate", description="Per-sequence ELBO, IWAE(K), KL and reconstruction of a split "
        "(aux factor excluded), in nats per sequence, per step and per unit; writes eval-<split>.json, "
        "eval-<split>.md and plots.")
    add_checkpoint_flags(parser)
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"), help="(default: %(default)s)")
    parser.add_argument("--iwae-samples", type=positive_int, default=25, help="importance samples K (default: %(default)s)")
    parser.add_argument("--iwae-chunk", type=positive_int, default=None,
                        help="particles traced at once (default: as many as keep about 16M input values in memory)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sequences per batch (default: %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the KL-per-step and gap figures")
    parser.add_argument("--no-latents", action="store_true",
                        help="skip what z carries: active units, I(y; z) per step and, for text, the correlations of "
                             "posterior means with sentence length and position (docs/evaluation.md)")
    parser.add_argument("--validate", action="store_true",
                        help="turn on Pyro's distribution validation (off by default: it costs time and memory)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the per-step cell of the sampling loop with torch.compile (docs/performance-compiled.md)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="capture the bounds of each batch as CUDA graphs, one per length bucket (--device cuda)")
    parser.add_argument("--length-bucket", type=positive_int, default=16, metavar="STEPS",
                        help="with --cuda-graphs, pad batch lengths up to a multiple of STEPS (default: %(default)s)")
    parser.add_argument("--protocol", default="ours", choices=("ours", "paper", "both"),
                        help="ours: whole sequences, ELBO and IWAE (eval-<split>.json); paper: the authors' eval_timit.py "
                             "(40-frame windows, states reset, one sample, analytic KL; eval_paper-<split>.json), the number "
                             "to compare with the paper's Table 1; both (default: %(default)s)")
    return parser


def command_evaluate(argv: List[str]) -> int:
    args = evaluate_parser().parse_args(argv)
    check_iwae_samples(args.iwae_samples, chunk=args.iwae_chunk)
    out = checked_out(args)  # before anything is loaded or computed
    objective, splits, device, state = load_for(args)
    repair_reports(out)
    meta = {"checkpoint": str(args.checkpoint), **checkpoint_position(state), "split": args.split,
            "seed": args.seed, "device": str(device)}
    sequences = splits.split(args.split)
    results = []  # every protocol is computed before any report is written
    if args.protocol in ("ours", "both"):
        result = evaluate_split(objective, sequences, splits.info, num_samples=args.iwae_samples,
                                batch_size=args.batch_size, chunk=args.iwae_chunk, device=device, quiet=args.quiet,
                                validate=args.validate, compile=args.compile, cuda_graphs=args.cuda_graphs,
                                length_bucket=args.length_bucket)
        if not args.no_latents:
            from ..evaluation.latents import latent_summary
            result.latents = latent_summary(objective, sequences, splits.info, batch_size=args.batch_size,
                                            seed=args.seed)
        results.append(("eval", result, markdown_table))
    if args.protocol in ("paper", "both"):
        results.append(("eval_paper", evaluate_paper(objective, sequences, splits.info, device=device,
                                                     quiet=args.quiet), markdown_lines))
    for number, (stem, result, render) in enumerate(results):
        result.meta = meta
        report = write_report(result, out, name=stem)
        if stem == "eval" and not args.no_plots:
            from ..evaluation.plots import eval_figures
            eval_figures(report, out)
        print(("\n" if number else "") + render(report), end="")
        name = report_name(args.split, stem)
        logging.getLogger(PROG).info("wrote %s and %s", out / f"{name}.json", out / f"{name}.md")
    print(f"\nScored: {checkpoint_note(meta)}.")
    return 0
