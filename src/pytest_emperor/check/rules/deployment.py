"""Rules on how the app is deployed under the convention: its socket (E301-E308, W307), what a vassal must not
start (E304, I305), cleanup and failure (W401, W402), and two apps on one socket (E306)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pytest_emperor.check.rules.app import SOCKET_KEYS, AppConfig, Kind, flag_on, section_line, where
from pytest_emperor.check.rules.findings import Finding, finding
from pytest_emperor.convention import routed_socket
from pytest_emperor.ini.values import lines

__all__ = ["deployment", "robustness", "socket_collisions"]


def deployment(app: AppConfig) -> Iterable[Finding]:
    header = section_line(app)
    sockets = app.sockets
    expected = routed_socket(app.name, app.socket_dir)
    routed = [s for s in sockets if s.address == expected]
    if not sockets:
        yield finding("E301", app.path, header)
    # Extra sockets (a stats or admin one) are fine when one of them is the routed one: only the candidates for
    # "the socket the router reaches" are judged on name and path.
    split: dict[str, list[str]] = {}
    for sock in routed or sockets[:1]:
        if sock.file not in split:
            split[sock.file] = lines(app.ini.texts.get(sock.file, app.raw_text))
        raw = split[sock.file]
        source = raw[sock.line - 1] if 0 < sock.line <= len(raw) else ""
        at = where(app, sock.file)
        if "%n" not in source and "%N" not in source:
            yield finding("W302", at, sock.line, f"`{sock.option} = {sock.address}`")
        if sock.address != expected:
            yield finding("W303", at, sock.line, f"`{sock.address}` for name `{app.name}` (want `{expected}`)")
        if sock.protocol == "http":
            spoken = "`http-socket`" if sock.option == "http-socket" else "`protocol = http`"
            yield finding("E308", at, sock.line, f"{spoken} on `{sock.address}`")
    mode_option = next((app.ini.option(k) for k in ("chmod-socket", "chmod") if app.ini.lines(k)), None)
    mode = app.resolution.last(mode_option.key) if mode_option else None
    for sock in sockets:
        directory = sock.address.rpartition("/")[0] or "/"
        # The routed socket is exempt: the router looks in the socket dir (/tmp by convention), and nginx's worker
        # runs as another user, so it needs 666 there (the production deployment's own reason for `chmod-socket = 666`).
        if sock.address == expected or mode_option is None or mode is None:
            continue
        if directory in app.world_writable_dirs:
            # core/socket.c: a bare `chmod-socket` means 666
            bits = int(mode, 8) if re.fullmatch(r"[0-7]{3,4}", mode) else (0o666 if mode == "" else 0)
            if bits & 0o002:
                message = f"`{mode_option.key} = {mode or '(666)'}` on `{sock.address}`"
                yield finding("W307", where(app, mode_option.file), mode_option.line, message)
    for key, code in (("http", "E304"), ("daemonize", "I305"), ("daemonize2", "I305")):
        for option in app.ini.options:
            if option.key == key:
                yield finding(code, where(app, option.file), option.line, f"`{key} = {option.value}`")


def robustness(app: AppConfig) -> Iterable[Finding]:
    header = section_line(app)
    # core/uwsgi.c uwsgi_vacuum unlinks unix sockets and pidfiles only: nothing to clean after TCP sockets
    unix = any(s.is_unix for s in app.sockets)
    if unix and not flag_on(app, "vacuum"):
        yield finding("W401", app.path, header)
    if not flag_on(app, "need-app"):
        yield finding("W402", app.path, header)


def socket_collisions(apps: Sequence[AppConfig]) -> list[Finding]:
    """E306: two apps of the convention bind one socket path."""
    findings: list[Finding] = []
    owners: dict[str, tuple[AppConfig, int]] = {}
    # other configs in one repo are often alternatives (dev and prod), not apps deployed side by side
    for app in (a for a in apps if a.kind is Kind.CONVENTION):
        for option in app.resolution.options:
            if option.key not in SOCKET_KEYS or option.synthetic:
                continue
            first = owners.setdefault(option.value, (app, option.line))
            if first[0] is not app:
                message = f"`{option.value}` is also bound by {first[0].path}:{first[1]} ({first[0].name})"
                findings.append(finding("E306", where(app, option.file), option.line, message))
    return findings
