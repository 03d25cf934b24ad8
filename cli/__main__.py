"""`python -m taskforge.cli`: the `taskforge-cli` command."""

from taskforge.cli import main

main()
