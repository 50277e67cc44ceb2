"""The command line: ``zforcing``, ``python -m pyro_zforcing`` and ``python run.py`` are this program."""
