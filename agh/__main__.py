"""`python -m agh`: the agh command line."""

from agh.cli import main

main()
