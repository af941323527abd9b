"""``emperor-dev check``: the CI gate that validates ``app.uwsgi.ini`` before deploy.

Exit codes: 0 nothing at or above ``--fail-on``; 1 findings at or above it; 2 usage error or unreadable input.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import click

from pytest_emperor.check.report import FORMATS, render
from pytest_emperor.check.rules import RULES, Severity
from pytest_emperor.check.runner import APP_INI, CheckSettings, InputError, run_check
from pytest_emperor.convention import SOCKET_SUFFIX
from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.engine.privileges import emperor_user, parse_emperor_args
from pytest_emperor.errors import ConfigFileError, RevisionError, UwsgiNotFound
from pytest_emperor.project_config import Setting, emperor_args_of, find_profile, resolve

__all__ = ["check"]

_LEVELS = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO}


def _codes(values: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    items = [values] if isinstance(values, str) else list(values)
    codes = tuple(c.strip().upper() for item in items for c in item.split(",") if c.strip())
    unknown = [c for c in codes if not any(code.startswith(c) for code in RULES)]
    if unknown:
        raise click.UsageError(f"unknown rule code(s): {', '.join(unknown)} (see `emperor-dev check --list-rules`)")
    return codes


def _pick(cli: Any, config: dict[str, Any], key: str, default: Any) -> Any:
    """Command line beats pyproject beats the default."""
    if cli not in (None, ()):
        return cli
    return config.get(key, default)


def _site_socket_dir(site_file: Path, default: str) -> str:
    """Where production's site file routes ``<app>``'s requests to (``uwsgi_pass unix:<dir>/$app.api.sock``): the
    socket dir the rules judge by. A site that routes elsewhere (another name pattern) is judged by ``default``,
    with a note: check's rules know the convention's layout only."""
    from pytest_emperor.routing.nginx_site import SiteError, load_site

    try:
        template = load_site(site_file).route_map.socket_template
    except SiteError as exc:
        raise click.UsageError(str(exc)) from exc
    template = template.removeprefix("unix:")
    directory, _, name = template.rpartition("/")
    if name == f"$app{SOCKET_SUFFIX}" and directory:
        return directory
    click.echo(f"note: {site_file} routes to {template}, not <dir>/$app{SOCKET_SUFFIX}: sockets are judged by "
               f"{default}/<name>{SOCKET_SUFFIX}", err=True)
    return default


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise click.UsageError(f"--prod-env takes VAR=value, not {bad[0]!r}")
    return dict(p.split("=", 1) for p in pairs)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _target(path: Path, emperor_args: Sequence[str]) -> Path:
    """A path to check; ``PATH@REV``: that revision's checkout, made and prepared as a deploy makes it
    (docs/revisions.md), so its ini is judged beside its own files; run as root with ``emperor_args`` that drop
    privileges (the boot check then drops), given to that user's group, as ``up`` and pytest give it."""
    from pytest_emperor.revisions.cache import checkout, split_revision

    where, rev = split_revision(str(path))
    if rev is None:
        return path
    _, uid, gid = parse_emperor_args(emperor_args)
    try:
        user = emperor_user(uid, gid) if os.geteuid() == 0 else None
    except KeyError:
        user = None  # unknown here: the check reports it (run_check), and boots nothing as that user
    return checkout(Path(where), rev, readable_by=user).path


def _rules_table() -> str:
    return "\n".join(f"{r.code}  {r.severity!s:7}  {r.name:28} {r.summary}" for r in RULES.values()) + "\n"


@click.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--name", help="Deploy name (the vassal name, hence %n and the socket). Default: the app dir's name.")
@click.option("--static", "static", is_flag=True, default=None, help="Skip the boot check.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), help="Output format (default: text).")
@click.option("--select", multiple=True, help="Only these rule codes or prefixes (comma-separated, repeatable).")
@click.option("--ignore", multiple=True, help="Skip these rule codes or prefixes (comma-separated, repeatable).")
@click.option("--fail-on", type=click.Choice(sorted(_LEVELS)), help="Lowest severity that fails (default: warning).")
@click.option("--socket-dir", help="Where the router expects <name>.api.sock (default: /tmp).")
@click.option("--probe", help="Path of the boot check's probe request (default: /).")
@click.option("--expect-status", type=int, help="Status the probe must get (default: anything but 5xx).")
@click.option("--timeout", type=float, help="Seconds the boot check waits for the vassal (default: 30).")
@click.option("--uwsgi", "uwsgi_path", type=click.Path(path_type=Path), help="The uwsgi binary (default: found).")
@click.option(
    "--emperor-args",
    help="Production's emperor flags, e.g. '--uid www-data --gid www-data': checked for what they imply, and "
    "used for the boot check when run as root.",
)
@click.option("--nginx-user", help="The user nginx's workers run as (default: nginx-user in the profile, else "
              "www-data).")
@click.option(
    "--convention/--no-convention",
    default=None,
    help="Judge every file as a vassal of the convention (default: app.uwsgi.ini files are, others get the rules "
    "of any uWSGI config).",
)
@click.option(
    "--exec",
    "run_commands",
    is_flag=True,
    default=None,
    help="Run the configs' @(exec://...) commands (trusted repos only; default: none is run).",
)
@click.option("--check-timeout", type=float, help="Seconds the static part may take in all (default: 60).")
@click.option("--prod-env", multiple=True, help="VAR=value of production's environment (repeatable).")
@click.option("--prod-path", multiple=True, help="A path production has (repeatable).")
@click.option("--prod-user", multiple=True, help="A user or group production has (repeatable).")
@click.option("--prod-feature", multiple=True, help="A build feature or plugin of production's uwsgi (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report here instead of stdout.")
@click.option("--list-rules", is_flag=True, help="Print the rules and exit.")
def check(
    paths: tuple[Path, ...],
    name: str | None,
    static: bool | None,
    fmt: str | None,
    select: tuple[str, ...],
    ignore: tuple[str, ...],
    fail_on: str | None,
    socket_dir: str | None,
    probe: str | None,
    expect_status: int | None,
    timeout: float | None,
    uwsgi_path: Path | None,
    emperor_args: str | None,
    nginx_user: str | None,
    convention: bool | None,
    run_commands: bool | None,
    check_timeout: float | None,
    prod_env: tuple[str, ...],
    prod_path: tuple[str, ...],
    prod_user: tuple[str, ...],
    prod_feature: tuple[str, ...],
    output: Path | None,
    list_rules: bool,
) -> None:
    """Check uWSGI app configs (app dirs, ini files, or dirs of app dirs) the way uWSGI will read them.

    \b
    Examples:
      emperor-dev check                       # ./app.uwsgi.ini (else the app dirs below), static + boot
      emperor-dev check --static --format github example_apps/
      emperor-dev check sites/service1 --name service1-beta --format sarif -o check.sarif
      emperor-dev check .@v1.0                 # the ini of the tag v1.0, in its own checkout
    """
    if list_rules:
        click.echo(_rules_table(), nl=False)
        return
    try:
        profile = find_profile(Path.cwd())
    except ConfigFileError as exc:
        raise click.UsageError(str(exc)) from exc
    for line in profile.deprecated:
        click.echo(f"warning: {line}", err=True)
    config = profile.check.values
    given = {"socket-dir": socket_dir, "timeout": timeout, "uwsgi": uwsgi_path, "nginx-user": nginx_user,
             "emperor-args": emperor_args_of(emperor_args) if emperor_args is not None else None}
    # The shared settings: the command line, then their deprecated copies in the check table, then the profile.
    shared = resolve(profile, {k: Setting(v, "command line") for k, v in given.items() if v is not None},
                     profile.check_layer())
    socket_dir = str(shared["socket-dir"])
    if shared["nginx-site"] is not None and shared.source("socket-dir") == "default":
        socket_dir = _site_socket_dir(shared["nginx-site"], socket_dir)
    # Without paths: this app dir's file, else the app dirs below (what `emperor-dev up` runs from here).
    here = Path(APP_INI) if Path(APP_INI).exists() else Path(".")
    try:
        targets = ([_target(p, shared["emperor-args"]) for p in paths] or [Path(p) for p in config.get("paths", [])]
                   or [here])
    except RevisionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    static_only = bool(_pick(static, config, "static", False))
    binary: Path | None = None
    try:
        binary = find_uwsgi(shared["uwsgi"])
    except UwsgiNotFound as exc:
        if shared["uwsgi"] is not None:
            raise click.UsageError(str(exc)) from exc
        click.echo("note: no uwsgi binary found: unknown-option, plugin and boot checks skipped", err=True)
    settings = CheckSettings(
        name=name,
        socket_dir=socket_dir,
        boot=not static_only,
        probe=str(_pick(probe, config, "probe", "/")),
        expect_status=_pick(expect_status, config, "expect-status", None),
        timeout=float(shared["timeout"]),
        select=_codes(_pick(select, config, "select", ())),
        ignore=_codes(_pick(ignore, config, "ignore", ())),
        uwsgi=binary,
        emperor_args=tuple(shared["emperor-args"]),
        nginx_user=str(shared["nginx-user"] or "www-data"),  # production's usual worker user, judged by E603
        convention=_pick(convention, config, "convention", None),
        run_commands=bool(_pick(run_commands, config, "exec", False)),
        check_timeout=float(_pick(check_timeout, config, "check-timeout", 60.0)),
        production_env=_env(prod_env) if prod_env else config.get("production-env"),
        production_paths=tuple(_pick(prod_path, config, "production-paths", ())),
        production_users=tuple(users) if (users := _pick(prod_user, config, "production-users", None)) else None,
        production_features=tuple(_pick(prod_feature, config, "production-features", ())),
    )
    level = _pick(fail_on, config, "fail-on", "warning")
    if level not in _LEVELS:
        raise click.UsageError(f"fail-on must be one of {', '.join(_LEVELS)}, not {level!r}")
    out_format = str(_pick(fmt, config, "format", "text"))
    if out_format not in FORMATS:
        raise click.UsageError(f"format must be one of {', '.join(FORMATS)}, not {out_format!r}")
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)  # unwind like Ctrl-C: temp dirs, commands, the boot emperor
    try:
        result = run_check(targets, settings)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("emperor-dev check: interrupted", err=True)
        sys.exit(130)
    report = render(out_format, result.findings, result.files, result.summary)
    if output is not None:
        output.write_text(report)
        # a CI log still shows the summary when the report goes to a file
        summary = render("text", result.findings, result.files, result.summary).splitlines()
        click.echo("\n".join(summary[-2:] if result.summary else summary[-1:]), err=True)
    else:
        click.echo(report, nl=False)
    if result.internal_error:
        sys.exit(2)
    sys.exit(1 if any(f.severity >= _LEVELS[level] for f in result.findings) else 0)
