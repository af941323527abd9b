"""The emperor output parser (pure): every log line of core/emperor.c it relies on, and attribution."""

from __future__ import annotations

import pytest

from pytest_emperor.engine.emperor_log import EmperorLogParser, EventKind

PREFIX = "Fri Nov 27 22:20:58 2026 - "


@pytest.mark.parametrize(
    ("line", "kind", "vassal", "pid"),
    [
        ("[emperor] vassal good.ini has been spawned", EventKind.SPAWNED, "good.ini", None),
        ("[emperor] vassal good.ini is ready to accept requests", EventKind.READY, "good.ini", None),
        ("[emperor] vassal good.ini is now loyal", EventKind.LOYAL, "good.ini", None),
        ("[emperor] curse the uwsgi instance bad.ini (pid: 4242)", EventKind.CURSED, "bad.ini", 4242),
        ("[emperor] stop the uwsgi instance good.ini", EventKind.STOPPING, "good.ini", None),
        ("[emperor] removed uwsgi instance bad.ini", EventKind.REMOVED, "bad.ini", None),
        ("[emperor] reload the uwsgi instance good.ini", EventKind.RELOADING, "good.ini", None),
        ("[emperor] unloyal bad behaving vassal found: bad.ini throttling it...", EventKind.THROTTLED, "bad.ini",
         None),
        ("[emperor] maximum throttle level for vassal bad.ini reached !!!", EventKind.MAX_THROTTLE, "bad.ini", None),
        ("[emperor] NO MERCY for vassal bad.ini !!!", EventKind.NO_MERCY, "bad.ini", None),
        ("The Emperor is buried.", EventKind.BURIED, None, None),
    ],
)
def test_verbose_lines_become_events(line: str, kind: EventKind, vassal: str | None, pid: int | None) -> None:
    event = EmperorLogParser().feed(PREFIX + line)
    assert event is not None
    assert (event.kind, event.vassal, event.pid, event.seq) == (kind, vassal, pid, 1)
    assert event.line == PREFIX + line


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[emperor] *** RAGNAROK EVOKED ***", EventKind.SHUTDOWN),
        ("[emperor] cleaning up blacklist ...", EventKind.BLACKLIST_CLEARED),
        ("*** Emperor stats server enabled on /tmp/x/stats.sock fd: 4 ***", EventKind.STATS_READY),
    ],
)
def test_plain_lines_become_events(line: str, kind: EventKind) -> None:
    event = EmperorLogParser().feed(line)
    assert event is not None and event.kind is kind and event.vassal is None


def test_chatter_is_not_an_event() -> None:
    parser = EmperorLogParser()
    for line in ["*** starting uWSGI Emperor ***", "detected binary path: /x/uwsgi", "[emperor] something new"]:
        assert parser.feed(line) is None
    assert parser.seq == 0


def test_early_vassal_output_is_attributed_to_the_vassal_that_announced_itself() -> None:
    parser = EmperorLogParser()
    lines = [
        "*** has_emperor mode detected (fd: 7) ***",
        "[uWSGI] getting INI configuration from strict.ini",
        "[strict-mode] unknown config directive: wsgi-fil",
        "[uWSGI] getting INI configuration from /run/vassal-logging.ini",  # our include is not the vassal's name
        "still strict.ini speaking",
        PREFIX + "[emperor] curse the uwsgi instance strict.ini (pid: 9)",
        "*** has_emperor mode detected (fd: 9) ***",
        "a line before the next vassal names itself",
        "[uWSGI] getting INI configuration from other.ini",
        "other speaking",
    ]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert [(e.kind, e.vassal, e.line) for e in events] == [
        (EventKind.OUTPUT, "strict.ini", "[strict-mode] unknown config directive: wsgi-fil"),
        (EventKind.OUTPUT, "strict.ini", "still strict.ini speaking"),
        (EventKind.CURSED, "strict.ini", lines[5]),
        (EventKind.OUTPUT, "other.ini", "other speaking"),
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4]


def test_a_line_naming_another_announced_vassal_is_that_vassals() -> None:
    # two vassals starting together: the first one's error comes after the second announced itself
    parser = EmperorLogParser()
    lines = [
        "*** has_emperor mode detected (fd: 7) ***",
        "[uWSGI] getting INI configuration from bad-module-1.ini",
        "*** has_emperor mode detected (fd: 9) ***",
        "[uWSGI] getting INI configuration from bad-socket-1.ini",
        "realpath() of bad-module-1.ini failed: No such file or directory [core/utils.c line 3662]",
        "bad-socket speaking of never-announced.ini",
    ]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert [(e.vassal, e.line[:12]) for e in events] == [
        ("bad-module-1.ini", "realpath() o"), ("bad-socket-1.ini", "bad-socket s")
    ]


def test_removal_without_curse_or_stop_is_a_death() -> None:
    parser = EmperorLogParser()
    lines = [
        "[emperor] vassal a.ini is ready to accept requests",
        "[emperor] removed uwsgi instance a.ini",  # died and reaped before its EOF was read
        "[emperor] curse the uwsgi instance a.ini (pid: 5)",
        "[emperor] removed uwsgi instance a.ini",  # the usual curse, then removal
        "[emperor] stop the uwsgi instance a.ini",
        "[emperor] removed uwsgi instance a.ini",  # stopped on purpose
    ]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert [e.kind for e in events] == [EventKind.READY, EventKind.REMOVED, EventKind.CURSED, EventKind.REMOVED,
                                        EventKind.STOPPING, EventKind.REMOVED]
    assert [e.is_death for e in events] == [False, True, True, False, False, False]
