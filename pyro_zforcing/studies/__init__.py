"""Studies: train variants (guides, objectives, models) over seeds, resume, tabulate."""
