#!/usr/bin/env python
"""The design card's ``python run.py --dataset timit``: the ``zforcing`` command (:mod:`pyro_zforcing.cli`)."""

from pyro_zforcing.cli import run

if __name__ == "__main__":
    run()
