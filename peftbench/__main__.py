"""`python -m peftbench` runs the CLI."""

from .cli import main

main()
