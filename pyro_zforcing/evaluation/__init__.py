"""Evaluation of trained models: bounds over a split, the authors' protocol, samples, figures."""
