"""Z-Forcing (Goyal et al., NIPS 2017) as a Pyro program."""

__version__ = "0.1.0"
