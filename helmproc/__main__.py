"""``python -m helmproc``: the same as the ``helmproc`` command."""

from helmproc.cli.app import main

if __name__ == "__main__":
    main()
