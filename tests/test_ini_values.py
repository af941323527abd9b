"""How uWSGI reads a value's characters, each in one place (pytest_emperor.ini.values), and the callers that
used to read it their own way: the check's rules, the engine's log reader."""

from __future__ import annotations

import ctypes
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emperor.check.rules import AppConfig, check_app
from pytest_emperor.ini import parse_ini
from pytest_emperor.ini.values import BLANKS, is_true, references, strtoll

_libc = ctypes.CDLL(None)
_libc.strtoll.restype = ctypes.c_longlong
_libc.strtoll.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30))
def test_strtoll_is_libcs(text: str) -> None:
    assert strtoll(text) == _libc.strtoll(text.encode(), None, 10)


@given(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(["", " ", "\t\n", "+"]), st.text(max_size=5))
def test_strtoll_reads_leading_digits_and_clamps(n: int, lead: str, tail: str) -> None:
    if lead == "+" and n < 0:
        lead = ""
    number = f"{lead}{n}{'x' + tail}"
    assert strtoll(number) == max(-(2**63), min(2**63 - 1, n))
    assert strtoll(number) == _libc.strtoll(number.encode(), None, 10)


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("", True),  # a bare `vacuum`
        ("true", True),
        ("1", True),
        ("00", True),  # not strcmp-equal to "0"
        ("0.0", True),
        ("0 ", True),
        ("nope", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("Off", False),
        ("nO", False),
    ],
)
def test_a_flag_is_on_unless_uwsgi_opt_true_reads_it_off(value: str, on: bool) -> None:
    # core/uwsgi.c uwsgi_opt_true: strcasecmp with false/off/no, strcmp with "0"
    assert is_true(value) is on


def _rule_app(text: str) -> AppConfig:
    ini = parse_ini(text)
    return AppConfig(path="app.uwsgi.ini", name="svc", ini=ini, resolution=ini.resolve(env={}), raw_text=text)


@pytest.mark.parametrize(("value", "warned"), [("00", False), ("0", True), ("off", True), ("", False)])
def test_the_check_reads_vacuum_as_uwsgi_does(value: str, warned: bool) -> None:
    # `vacuum = 00` is on for uWSGI; the check used to read any value starting with 0 as off
    text = f"[uwsgi]\nsocket = /tmp/svc.api.sock\nneed-app = true\nvacuum = {value}\n"
    assert ("W401" in [f.code for f in check_app(_rule_app(text))]) is warned


# a flat name: no parenthesis, and no `%` (which starts the scan over in uWSGI)
_FLAT_REFERENCE = re.compile(r"%\(([^()%]*)\)")


@given(st.text(alphabet="%()ab ", max_size=24))
def test_references_are_the_flat_regex_where_parentheses_do_not_nest(value: str) -> None:
    # when every "(" opens a reference, the names are what a flat regex finds (an empty `%()` names nothing)
    if all(value[i - 1 : i] == "%" for i, c in enumerate(value) if c == "("):
        assert references(value, "%") == [n for n in _FLAT_REFERENCE.findall(value) if n]


def test_references_nest_and_restart_as_uwsgi_scans() -> None:
    assert references("%(a(b)c) and %(d)", "%") == ["a(b)c", "d"]
    assert references("%(a%(b)", "%") == ["b"]
    assert references("%() %(x", "%") == []
    assert references("$(HOME)/@(exec://x)%(y)", "$") == ["HOME"]
    assert references("$(HOME)/@(exec://x)%(y)", "@") == ["exec://x"]


def test_a_math_pipeline_reaches_the_at_of_the_names_it_uses() -> None:
    f = parse_ini("[uwsgi]\nbase = @(exec://echo 3000)\nport = %(base + 1)\n")
    assert f.needs_at_resolver("127.0.0.1:%(port)")
    assert not f.needs_at_resolver("127.0.0.1:%(other + 1)")


@given(
    st.lists(st.sampled_from(list(BLANKS)), max_size=3).map("".join),
    st.lists(st.sampled_from(list(BLANKS)), max_size=3).map("".join),
    st.lists(st.sampled_from(list(BLANKS)), max_size=3).map("".join),
)
def test_the_check_finds_an_option_line_where_the_reader_does(before: str, around: str, after: str) -> None:
    # W116 scans every line of every branch itself; it must see the option the reader sees, whatever the blanks
    text = f"[uwsgi]\n{before}alarm-log{around}={around}boom hello{after}\n"
    assert [(o.key, o.value) for o in parse_ini(text).options] == [("alarm-log", "boom hello")]
    assert [f.code for f in check_app(_rule_app(text)) if f.code == "W116"] == ["W116"]
