"""What ``emperor-dev up`` shows and decides: which apps restart on a change, the log tail and its events, the
one state of an app over a retry episode, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_emperor.dev.apps import (
    AppSpec,
)
from pytest_emperor.dev.control import AppStatus
from pytest_emperor.dev.logs import LogLine, LogTail, RetryMuter, describe
from pytest_emperor.dev.output import Output, plain_table
from pytest_emperor.dev.watch import apps_to_restart
from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
from pytest_emperor.engine.vassal import VassalState, decide_state

# -- what restarts on a change ----------------------------------------------------------------------------------


def test_apps_to_restart(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    apps = {"a": AppSpec("a", a / "app.uwsgi.ini"), "a2": AppSpec("a2", a / "app.uwsgi.ini"),
            "b": AppSpec("b", b / "app.uwsgi.ini")}
    assert apps_to_restart([b / "app.uwsgi.ini"], apps, code=False) == {"b"}
    assert apps_to_restart([a / "app.uwsgi.ini"], apps, code=False) == {"a", "a2"}
    assert apps_to_restart([a / "pkg" / "views.py"], apps, code=False) == set()
    assert apps_to_restart([a / "pkg" / "views.py"], apps, code=True) == {"a", "a2"}
    assert apps_to_restart([a / "README.md", a / "other.ini"], apps, code=True) == set()
    for ignored in ("venv-flask/lib/x.py", "__pycache__/x.py", ".git/x.py", "lib/site-packages/x.py"):
        assert apps_to_restart([a / ignored], apps, code=True) == set(), ignored
    assert apps_to_restart([tmp_path / "x.py"], apps, code=True) == set()


# -- logs -------------------------------------------------------------------------------------------------------


def test_log_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "svc.log"
    log.write_bytes(b"old\n")
    tail = LogTail(tmp_path, from_end=True)
    assert tail.read() == []
    with log.open("ab") as f:
        f.write(b"one\r\ntw")
    assert tail.read() == [LogLine("svc", "one")]
    with log.open("ab") as f:
        f.write(b"o\n\n")
    assert tail.read() == [LogLine("svc", "two"), LogLine("svc", "")]
    log.write_bytes(b"new\n")  # truncated (a new file): start over
    assert tail.read() == [LogLine("svc", "new")]


def test_log_tail_turns_emperor_lines_into_events_and_filters_by_app(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("a says\n")
    (tmp_path / "logs" / "b.log").write_text("b says\n")
    prefix = "Fri Nov 27 22:20:58 2026 - "
    (tmp_path / "emperor.log").write_text(
        f"{prefix}[emperor] curse the uwsgi instance a.ini (pid: 12)\n"
        f"{prefix}[emperor] vassal b.ini is ready to accept requests\n"
        "*** has_emperor mode detected (fd: 7) ***\n[uWSGI] getting INI configuration from a.ini\n"
        "[strict-mode] unknown config directive: x\n"
    )
    everything = LogTail(tmp_path).read()
    assert LogLine("a", "a says") in everything and LogLine("b", "b says") in everything
    curse = next(line for line in everything if line.kind is EventKind.CURSED)
    assert (curse.app, curse.event) == ("a", True) and "(pid 12)" in curse.text
    assert LogLine("a", "[strict-mode] unknown config directive: x") in everything
    only_a = LogTail(tmp_path, app="a").read()
    assert {line.app for line in only_a} == {"a"}
    assert len(only_a) == 3


def test_describe_skips_chatter() -> None:
    assert describe(EmperorEvent(1, EventKind.SPAWNED, "a.ini", "x")) is None
    assert describe(EmperorEvent(1, EventKind.SHUTDOWN, None, "x")) is None
    line = describe(EmperorEvent(1, EventKind.THROTTLED, "a.ini", "x"))
    assert line is not None and "emperor-dev logs a" in line.text


def test_retry_muter_mutes_a_throttled_app_until_it_starts() -> None:
    muter = RetryMuter()
    stream = [
        LogLine("a", "banner"),
        LogLine("a", "cursed", EventKind.CURSED),
        LogLine("a", "throttled", EventKind.THROTTLED),
        LogLine("a", "banner again"),
        LogLine("a", "cursed again", EventKind.CURSED),
        LogLine("a", "throttled again", EventKind.THROTTLED),
        LogLine("b", "b is fine"),
        LogLine("a", "ready", EventKind.READY),
        LogLine("a", "serving"),
    ]
    shown = [line.text for line in stream if muter.keep(line)]
    assert shown == ["banner", "cursed", "throttled", "b is fine", "ready", "serving"]
    already = RetryMuter(["a"])  # ``up`` starts streaming after the throttling it already showed in its table
    assert [already.keep(line) for line in stream] == [False] * 6 + [True] * 3


def test_stream_says_removed_only_when_an_operator_removed_it_and_stays_quiet_while_muted() -> None:
    muter = RetryMuter()
    stream = [
        LogLine("a", "cursed", EventKind.CURSED),
        LogLine("a", "removed", EventKind.REMOVED),  # the emperor's removal before its retry: not true for the app
        LogLine("a", "throttled", EventKind.THROTTLED),
        LogLine("a", "maximum throttle reached", EventKind.MAX_THROTTLE),
        LogLine("a", "throttled", EventKind.THROTTLED),
        LogLine("a", "maximum throttle reached", EventKind.MAX_THROTTLE),
        LogLine("a", "stopping", EventKind.STOPPING),  # `emperor-dev rm a`: its state changes
        LogLine("a", "removed", EventKind.REMOVED),
    ]
    shown = [line.text for line in stream if muter.keep(line)]
    assert shown == ["cursed", "throttled", "removed"]


def event(kind: EventKind, died: bool = False) -> EmperorEvent:
    return EmperorEvent(1, kind, "a.ini", "x", died=died)


@pytest.mark.parametrize(
    ("stats", "kinds", "expected"),
    [
        ("starting", [], "starting"),
        ("starting", [EventKind.CURSED], "cursed"),
        ("cursed", [EventKind.CURSED], "cursed"),
        # Between two retries the stats alternate; the state does not.
        ("starting", [EventKind.CURSED, EventKind.THROTTLED, EventKind.CURSED], "throttled"),
        ("throttled", [EventKind.CURSED, EventKind.THROTTLED, EventKind.CURSED], "throttled"),
        ("cursed", [EventKind.CURSED, EventKind.THROTTLED], "throttled"),
        # A ready or a reload ends the episode.
        ("starting", [EventKind.CURSED, EventKind.THROTTLED, EventKind.READY], "starting"),
        ("starting", [EventKind.THROTTLED, EventKind.RELOADING, EventKind.CURSED], "cursed"),
        ("ready", [EventKind.CURSED, EventKind.THROTTLED], "ready"),
        ("stopped", [EventKind.THROTTLED], "stopped"),
    ],
)
def test_one_vassal_state_over_a_retry_episode(stats: str, kinds: list[EventKind], expected: str) -> None:
    assert decide_state(VassalState(stats), [event(kind) for kind in kinds]) is VassalState(expected)


def test_a_removal_without_a_curse_is_a_death_in_the_stream() -> None:
    line = describe(event(EventKind.REMOVED, died=True))
    assert line is not None and line.kind is EventKind.CURSED and RetryMuter().keep(line)


def test_plain_table_and_prefixed_lines_are_aligned_without_escape_codes(tmp_path: Path) -> None:
    apps = [
        AppStatus("service1", "http://service1.api.localhost:8080/", "ready", 12, "/x", None, None),
        AppStatus("b", "http://b.api.localhost:8080/", "cursed", None, "/y", None, None, ["chdir(): boom"]),
    ]
    assert plain_table(apps).splitlines() == [
        "NAME      URL                                  STATE   PID",
        "service1  http://service1.api.localhost:8080/  ready   12",
        "b         http://b.api.localhost:8080/         cursed  -",
    ]
    with (tmp_path / "out").open("w") as stream:
        output = Output(stream)
        output.add_names(["service1", "b"])
        output.table(apps)
        output.log_lines([LogLine("b", "cursed", EventKind.CURSED)])
    text = (tmp_path / "out").read_text()
    assert "\x1b" not in text
    assert text.splitlines()[-2:] == ["b        | chdir(): boom", "emperor  | b: cursed"]


@pytest.mark.parametrize("color", [False, True])
def test_app_names_reach_the_terminal_escaped_in_every_printed_place(color: bool) -> None:
    import io

    name = "x\x1b]0;owned\x07\x1b[2J\u202ey"  # a title change, a screen clear, a right-to-left override
    shown = "x\\x1b]0;owned\\x07\\x1b[2J\\u202ey"
    apps = [AppStatus(name, f"http://{name}.api.localhost:1/", "error", None, "/x", None, None, ["refused"])]
    stream = io.StringIO()
    output = Output(stream, color=color)
    output.add_names([name])
    output.table(apps)
    output.line(name, "a line of its own")
    output.log_lines([LogLine(name, "cursed", EventKind.CURSED)])
    output.note(f"warning: {name} is muted\nsecond line")
    text = stream.getvalue()
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
    assert text.count(shown) >= 5 and "second line" in text
