"""The text study's table from a study directory: per variant, mean ± std over seeds of the test
bounds per sentence, perplexity per word from the ELBO and from IWAE(K) (exp of minus the bound
per word, ``<eos>`` counted), KL per word, MI per word, active units, and the largest |r| over
latent dimensions of the posterior mean with sentence length and with word position.

    python scripts/text_study_table.py STUDY_DIR
"""

import json
import math
import sys
from pathlib import Path

from pyro_zforcing.studies.ablation import mean_std

COLUMNS = ("ELBO / sentence", "IWAE / sentence", "perplexity (ELBO)", "perplexity (IWAE)", "KL / word",
           "MI / word", "active units", "max abs r(mean, length)", "max abs r(mean, position)", "epochs", "stopped")


def cells(result: dict) -> list:
    correlations = result.get("latent_correlations") or {}
    largest = [max((abs(v) for v in correlations.get(key) or [] if v is not None), default=float("nan"))
               for key in ("length", "position")]
    return [result["test_elbo"], result["test_iwae"], math.exp(-result["test_elbo_per_unit"]),
            math.exp(-result["test_iwae_per_unit"]), result["test_kl_per_step"], result["test_mi"],
            result["active_units"], *largest, result["epochs"]]


def main(study_dir: str) -> None:
    study_dir = Path(study_dir)
    study = json.loads((study_dir / "study.json").read_text())
    print("| variant | " + " | ".join(COLUMNS) + " |")
    print("|---" + "|---:" * (len(COLUMNS) - 1) + "|---|")
    digits = (2, 2, 1, 1, 4, 4, 1, 3, 3, 1)
    for variant in study["variants"]:
        results = [json.loads(p.read_text()) for seed in study["seeds"]
                   if (p := study_dir / f"{variant}-seed{seed}" / "result.json").exists()]
        if not results:
            continue
        columns = list(zip(*(cells(r) for r in results)))
        stopped = ", ".join(sorted({r["stopped"] for r in results}))
        print(f"| {variant} | " + " | ".join(mean_std(c, d) for c, d in zip(columns, digits))
              + f" | {stopped} {len(results)}/{len(study['seeds'])} |")


if __name__ == "__main__":
    main(sys.argv[1])
