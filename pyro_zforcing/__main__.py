"""``python -m pyro_zforcing``: the ``zforcing`` command."""

import sys

from .cli.main import main

sys.exit(main())
