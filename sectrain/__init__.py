"""sectrain: config-driven training of Squeeze-and-Excitation networks."""

from importlib.metadata import version

__version__ = version("sectrain")  # pyproject.toml holds the number
