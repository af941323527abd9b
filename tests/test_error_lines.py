"""Which lines of a vassal's output say something went wrong: one filter (engine/vassal_log.is_error_line), for the
lines a failing vassal's error shows and the lines ``emperor-dev check`` blames an option from."""

from __future__ import annotations

import pytest

from pytest_emperor.engine.vassal_log import is_error_line

# A uWSGI 2.0.31 start that went well (a master, one worker, a unix socket, the python plugin), line for line.
STARTUP = [
    '[uWSGI] getting INI configuration from /srv/app/a.ini',
    '*** Starting uWSGI 2.0.31 (64bit) on [Sun Dec  6 05:19:30 2026] ***',
    'compiled with version: 12.2.0 on 06 December 2026 01:57:23',
    'detected number of CPU cores: 2',
    'current working directory: /tmp',
    'detected binary path: /srv/venv/bin/uwsgi',
    '!!! no internal routing support, rebuild with pcre support !!!',
    'uWSGI running as root, you can use --uid/--gid/--chroot options',
    '*** WARNING: you are running uWSGI as root !!! (use the --uid flag) *** ',
    'chdir() to /srv/app',
    'your processes number limit is 96367',
    'detected max file descriptor number: 20000',
    'lock engine: pthread robust mutexes',
    'thunder lock: disabled (you can enable it with --thunder-lock)',
    'uwsgi socket 0 bound to UNIX address /tmp/app.api.sock fd 3',
    'Python main interpreter initialized at 0x7f605fb76ef8',
    'python threads support enabled',
    'your server socket listen backlog is limited to 100 connections',
    'your mercy for graceful operations on workers is 60 seconds',
    'mapped 145840 bytes (142 KB) for 1 cores',
    '*** Operational MODE: single process ***',
    '*** uWSGI is running in multiple interpreter mode ***',
    'spawned uWSGI master process (pid: 11247)',
    'spawned uWSGI worker 1 (pid: 11254, cores: 1)',
]

# What uWSGI 2.0 prints when a start goes wrong (its messages, from core/*.c and plugins/python), and Python's own.
FAILURES = [
    "ModuleNotFoundError: No module named 'nosuchmod'",
    "unable to load app 0 (mountpoint='') (callable not found or import error)",
    "*** no app loaded. going in full dynamic mode ***",
    'open("/nope/app.log"): No such file or directory [core/logging.c line 288]',
    "bind(): Permission denied [core/socket.c line 230]",
    "chdir(): No such file or directory [core/uwsgi.c line 2617]",
    "unable to find user nosuchuser",
    "[strict-mode] unknown config directive: nosuchoption",
    "invalid cheaper value: must be lower than processes",
    "Traceback (most recent call last):",
    "DAMN ! worker 1 (pid: 11254) died :( trying respawn ...",
    "cheaper soft rss memory limit exceeded, can't spawn more workers",
    "open(\"/dev/nosuch\"): No such device or address",
]


@pytest.mark.parametrize("line", STARTUP)
def test_a_good_start_has_no_error_line(line: str) -> None:
    assert not is_error_line(line)


@pytest.mark.parametrize("line", FAILURES)
def test_what_uwsgi_says_when_a_start_fails_is(line: str) -> None:
    assert is_error_line(line)
