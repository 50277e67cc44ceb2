"""Ten latent interpolations between a short and a long test sentence of a trained text
checkpoint, and the rank correlations of each decoded sentence's length with the interpolation
weight a and with the interpolated real length (1 - a) T_I + a T_J.

    python scripts/text_interpolations.py RUN/checkpoints/best.pt [--cache-dir DIR]
        [--decode greedy|sample] [--repeats R]

Pairs: the k-th test sentence of at most 6 tokens (``<eos>`` counted) with the k-th of at least 12,
k = 1..10, in test-split order, so that a latent that carries length would make the decoded length
rise with a. Five points a = 0 .. 1 each, decoded as ``sample`` decodes text
(:func:`pyro_zforcing.evaluation.samples.interpolate`, until ``<eos>`` or twice the longer
sentence): ``greedy`` takes the most likely word at each step, ``sample`` draws each word given the
interpolated latent trajectory (seeded). The correlations pool R decodings of every point (the
first is printed); a correlation is undefined when every decoded sentence has the same length.
"""

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from pyro_zforcing.build import load_trained
from pyro_zforcing.evaluation.samples import decoded_length, interpolate, interpolation_steps, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--cache-dir")
    parser.add_argument("--decode", choices=("greedy", "sample"), default="greedy")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    objective, splits, _ = load_trained(args.checkpoint, cache_dir=args.cache_dir)
    torch.manual_seed(0)
    test, info = splits.test, splits.info
    expected, weights, decoded_lengths = [], [], []
    short = [i for i, sentence in enumerate(test) if len(sentence) <= 6][:10]
    long = [j for j, sentence in enumerate(test) if len(sentence) >= 12][:10]
    for i, j in zip(short, long):
        print(f"pair {i},{j}: real #{i}: {words(test[i], info)} || real #{j}: {words(test[j], info)}")
        for repeat in range(args.repeats):
            alphas, decoded = interpolate(objective, test[i], test[j], num=5, mean=args.decode == "greedy",
                                          steps=interpolation_steps(info, [len(test[i]), len(test[j])]))
            for alpha, row in zip(alphas, decoded.numpy()):
                if repeat == 0:
                    print(f"  a={alpha:.2f} ({decoded_length(row, info)} words): {words(row, info)}")
                expected.append((1 - alpha) * len(test[i]) + alpha * len(test[j]))
                weights.append(alpha)
                decoded_lengths.append(decoded_length(row, info))
    print(f"decoded lengths: mean {np.mean(decoded_lengths):.2f}, sd {np.std(decoded_lengths):.2f}")
    for name, values in (("a", weights), ("(1 - a) T_I + a T_J", expected)):
        if len(set(decoded_lengths)) == 1:
            print(f"Spearman rho(decoded length, {name}): undefined, every decoded sentence has the same length")
            continue
        rho, p = spearmanr(values, decoded_lengths)
        print(f"Spearman rho(decoded length, {name}) over {len(expected)} decodings: {rho:.3f} (p = {p:.2g})")


if __name__ == "__main__":
    main()
