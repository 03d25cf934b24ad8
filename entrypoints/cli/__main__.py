"""`python -m taskforge.entrypoints.cli`: the `taskforge` command."""

from taskforge.entrypoints.cli import main

main()
