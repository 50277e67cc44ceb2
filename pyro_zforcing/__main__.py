"""``python -m pyro_zforcing``: the ``zforcing`` command."""

from .cli import run

run()
