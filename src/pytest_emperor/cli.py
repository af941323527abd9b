"""The ``emperor-dev`` command line: one click group, one sub-command per job.

Each sub-command lives in the module named for its job and is only named here, so this file stays a table of
contents. A sub-command's module is imported when that command runs (click's documented lazy-loading pattern):
``emperor-dev down`` does not pay for the checker, nor ``check`` for the dev server.
"""

from __future__ import annotations

import importlib

import click

from pytest_emperor import __version__

#: Each sub-command and the module that defines it (as a function of the same name).
COMMANDS = {
    "up": "pytest_emperor.dev.cli",
    "status": "pytest_emperor.dev.cli",
    "logs": "pytest_emperor.dev.cli",
    "add": "pytest_emperor.dev.cli",
    "rm": "pytest_emperor.dev.cli",
    "reload": "pytest_emperor.dev.cli",
    "down": "pytest_emperor.dev.cli",
    "request": "pytest_emperor.dev.cli",
    "check": "pytest_emperor.check.cli",
    "config": "pytest_emperor.dev.cli",
    "revisions": "pytest_emperor.revisions.cli",
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command is run or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command = getattr(importlib.import_module(module), cmd_name)
        assert isinstance(command, click.Command), f"{module}.{cmd_name} is not a click command"
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emperor-dev")
def main() -> None:
    """Run and check WSGI apps the way a uWSGI emperor behind nginx runs them.

    \b
    Examples:
      emperor-dev --version
    """
