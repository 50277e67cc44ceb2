"""Ten latent interpolations between test sentences of a trained text checkpoint, and the rank
correlation of each decoded sentence's length with the interpolated real length (1 - a) T_I + a T_J.

    python scripts/text_interpolations.py RUN/checkpoints/best.pt [CACHE_DIR]

Pairs (0, 1), (2, 3), ... (18, 19) of the test split, five points a = 0 .. 1 each, decoded as
``sample`` decodes text (:func:`pyro_zforcing.evaluation.samples.interpolate`: most likely word,
until ``<eos>`` or twice the longer sentence).
"""

import sys

import torch
from scipy.stats import spearmanr

from pyro_zforcing.build import load_trained
from pyro_zforcing.evaluation.samples import decoded_length, interpolate, interpolation_steps, words


def main(checkpoint: str, cache_dir=None) -> None:
    objective, splits, _ = load_trained(checkpoint, cache_dir=cache_dir)
    torch.manual_seed(0)
    test, info = splits.test, splits.info
    expected, decoded_lengths = [], []
    for k in range(10):
        i, j = 2 * k, 2 * k + 1
        alphas, decoded = interpolate(objective, test[i], test[j], num=5,
                                      steps=interpolation_steps(info, [len(test[i]), len(test[j])]))
        print(f"pair {i},{j}: real #{i}: {words(test[i], info)} || real #{j}: {words(test[j], info)}")
        for alpha, row in zip(alphas, decoded.numpy()):
            print(f"  a={alpha:.2f} ({decoded_length(row, info)} words): {words(row, info)}")
            expected.append((1 - alpha) * len(test[i]) + alpha * len(test[j]))
            decoded_lengths.append(decoded_length(row, info))
    rho, p = spearmanr(expected, decoded_lengths)
    print(f"Spearman rho(decoded length, (1 - a) T_I + a T_J) over {len(expected)} decodings: {rho:.3f} (p = {p:.2f})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
