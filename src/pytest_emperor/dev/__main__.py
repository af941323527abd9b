"""``python -m pytest_emperor.dev``: the ``emperor-dev`` command, for when its script is not on PATH."""

from pytest_emperor.cli import main

if __name__ == "__main__":
    main(prog_name="emperor-dev")
