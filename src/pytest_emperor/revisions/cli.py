"""``emperor-dev revisions``: the checkouts that deploys of ``PATH@REV`` keep in the user's cache."""

from __future__ import annotations

import sys

import click

from pytest_emperor.errors import UnsafePath
from pytest_emperor.revisions.cache import cache_root, kept
from pytest_emperor.revisions.cache import clean as clean_cache

__all__ = ["revisions"]


@click.group()
def revisions() -> None:
    """The checkouts of revisions (PATH@REV, deploy_app(rev=...)), kept per commit in
    $XDG_CACHE_HOME/pytest-emperor/revisions (docs/revisions.md).

    \b
    Examples:
      emperor-dev revisions list
      emperor-dev revisions clean
    """


@revisions.command("list")
def list_() -> None:
    """Print each kept checkout: its path and the setup it got."""
    for tree, setup in kept():
        click.echo(f"{tree}  {setup}")


@revisions.command()
def clean() -> None:
    """Remove every kept checkout (the next deploy of a revision makes it again). Exits 1 when a checkout was
    left because another process is making it."""
    try:
        removed, busy = clean_cache()
    except UnsafePath as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for tree in removed:
        click.echo(f"removed {tree}")
    for tree in busy:
        click.echo(f"left {tree}: another process is making it", err=True)
    if not removed and not busy:
        click.echo(f"no checkouts in {cache_root()}")
    sys.exit(1 if busy else 0)
