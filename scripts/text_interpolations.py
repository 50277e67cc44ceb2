"""Ten latent interpolations between a short and a long test sentence of a trained text
checkpoint, and the rank correlations of each decoded sentence's length with the interpolation
weight a and with the interpolated real length (1 - a) T_I + a T_J.

    python scripts/text_interpolations.py RUN/checkpoints/best.pt [CACHE_DIR]

Pairs: the k-th test sentence of at most 6 tokens (``<eos>`` counted) with the k-th of at least 12,
k = 1..10, in test-split order, so that a latent that carries length would make the decoded length
rise with a. Five points a = 0 .. 1 each, decoded as ``sample`` decodes text
(:func:`pyro_zforcing.evaluation.samples.interpolate`: most likely word, until ``<eos>`` or twice
the longer sentence).
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
    expected, weights, decoded_lengths = [], [], []
    short = [i for i, sentence in enumerate(test) if len(sentence) <= 6][:10]
    long = [j for j, sentence in enumerate(test) if len(sentence) >= 12][:10]
    for i, j in zip(short, long):
        alphas, decoded = interpolate(objective, test[i], test[j], num=5,
                                      steps=interpolation_steps(info, [len(test[i]), len(test[j])]))
        print(f"pair {i},{j}: real #{i}: {words(test[i], info)} || real #{j}: {words(test[j], info)}")
        for alpha, row in zip(alphas, decoded.numpy()):
            print(f"  a={alpha:.2f} ({decoded_length(row, info)} words): {words(row, info)}")
            expected.append((1 - alpha) * len(test[i]) + alpha * len(test[j]))
            weights.append(alpha)
            decoded_lengths.append(decoded_length(row, info))
    for name, values in (("a", weights), ("(1 - a) T_I + a T_J", expected)):
        rho, p = spearmanr(values, decoded_lengths)
        print(f"Spearman rho(decoded length, {name}) over {len(expected)} decodings: {rho:.3f} (p = {p:.2g})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
