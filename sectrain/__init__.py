"""sectrain: config-driven training of Squeeze-and-Excitation networks."""

__version__ = "0.1.0"
