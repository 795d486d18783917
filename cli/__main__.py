"""``python -m helmproc.cli`` runs the command line."""

from helmproc.cli.app import main

main()
