#!/usr/bin/env python
"""The design card's ``python run.py --dataset timit``: the ``zforcing`` command (:mod:`pyro_zforcing.cli`)."""

import sys

from pyro_zforcing.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
