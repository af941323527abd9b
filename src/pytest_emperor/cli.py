"""The ``emperor-dev`` command line: one click group, one sub-command per job.

Each sub-command lives in the module named for its job and is only registered here, so this file stays a table
of contents.
"""

from __future__ import annotations

import click

from pytest_emperor import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emperor-dev")
def main() -> None:
    """Run and check WSGI apps the way a uWSGI emperor behind nginx runs them.

    \b
    Examples:
      emperor-dev --version
    """

from pytest_emperor.dev.cli import add, down, logs, reload, request, rm, status, up  # noqa: E402

main.add_command(up)
main.add_command(status)
main.add_command(logs)
main.add_command(add)
main.add_command(rm)
main.add_command(reload)
main.add_command(down)
main.add_command(request)

from pytest_emperor.check.cli import check  # noqa: E402

main.add_command(check)
