"""`python -m sectrain ...`: the `sectrain` command, with the interpreter of your choice."""

from sectrain.cli import main

main()
