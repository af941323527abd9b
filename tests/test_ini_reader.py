"""Unit and property tests for the sans-IO uWSGI ini reader (the differential test against the real binary
lives in test_ini_uwsgi.py)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from seed import SEED_INI

from pytest_emperor.engine.deploy_plan import read_ini
from pytest_emperor.ini import (
    IMMEDIATE_OPTIONS,
    IniFile,
    IniOption,
    MagicVars,
    djb33x_hex,
    parse_ini,
)

VASSALS = "/srv/emperor/vassals"
# The production deployment: vassals/service1-beta.ini -> /srv/sites/service1/app.uwsgi.ini, opened in the vassal dir.
SEED_MAGIC = MagicVars.for_config(
    "service1-beta.ini",
    cwd=VASSALS,
    is_symlink=True,
    realpath="/srv/sites/service1/app.uwsgi.ini",
    inode=1234,
    cpu_count=2,
)
SEED = SEED_INI


def fake_exec(spec: str) -> str:
    """A stand-in for /bin/sh that knows the one command of the production ini (the real one is in the uwsgi test)."""
    assert spec == f"exec://dirname $(realpath {VASSALS}/service1-beta.ini)"
    return "/srv/sites/service1"


def ini(body: str, **kw: object) -> list[tuple[str, str, int]]:
    f = parse_ini("[uwsgi]\n" + body, **kw)  # type: ignore[arg-type]
    return [(o.key, o.value, o.line) for o in f.options]


# --- magic variables -------------------------------------------------------------------------------------


def test_magic_for_symlink_uses_link_path_not_target() -> None:
    t = SEED_MAGIC.table
    assert t["p"] == t["P"] == f"{VASSALS}/service1-beta.ini"
    assert t["d"] == f"{VASSALS}/"
    assert (t["s"], t["n"], t["e"], t["c"], t["o"], t["v"]) == (
        "service1-beta.ini",
        "service1-beta",
        "ini",
        "vassals",
        "service1-beta.ini",
        VASSALS,
    )
    assert (t["0"], t["1"], t["2"]) == ("srv", "emperor", "vassals")
    assert "3" not in t
    assert (t["i"], t["k"]) == ("1234", "2")
    assert t["N"] == "service1-beta" and t["D"] == t["d"]


def test_magic_for_regular_file_uses_realpath() -> None:
    m = MagicVars.for_config("app.ini", cwd="/x", is_symlink=False, realpath="/real/dir/app.ini")
    assert m.table["p"] == "/real/dir/app.ini"
    assert m.table["c"] == "dir"


def test_magic_absolute_symlink_arg_kept_as_given() -> None:
    m = MagicVars.for_config("/a/b/v.ini", cwd="/elsewhere", is_symlink=True, realpath="/t/x.ini")
    assert m.table["p"] == "/a/b/v.ini" and m.table["n"] == "v"


def test_magic_extension_and_name_come_from_the_file_name() -> None:
    # measured on 2.0.31 (`uwsgi --ini conf.d/app --get n` with n = [%n]|%e): a dotted dir does not count
    m = MagicVars.for_config("conf.d/app", cwd="/x", is_symlink=True, realpath="/x/conf.d/app")
    assert (m.table["n"], m.table.get("e", "")) == ("app", "")


def test_magic_not_first_config_has_no_uppercase() -> None:
    m = MagicVars.for_config("a.ini", cwd="/x", is_symlink=True, realpath="/y/a.ini", first=False)
    assert "P" not in m.table and "N" not in m.table


def test_magic_scheme_sets_only_o() -> None:
    m = MagicVars.for_config("exec://cat x.ini", cwd="/x", is_symlink=False, realpath="")
    assert m.table["o"] == "exec://cat x.ini" and "p" not in m.table


def test_djb33x_matches_uwsgi() -> None:
    # measured: uwsgi 2.0.31 printed %j = FEECD929 for this %p
    assert djb33x_hex(b"/tmp/ck-probe/vassals/app-x.ini") == "FEECD929"
    assert len(djb33x_hex("/é".encode())) == 8


# --- magic substitution over the raw text ---------------------------------------------------------------


def test_socket_from_n() -> None:
    f = parse_ini("[uwsgi]\nsocket = /tmp/%n.api.sock\n", magic=SEED_MAGIC)
    assert f.last("socket") == "/tmp/service1-beta.api.sock"


def test_unknown_magic_deletes_itself_and_next_char() -> None:
    f = parse_ini("[uwsgi]\npct = 100% done\n")
    assert f.last("pct") == "100done"
    assert [p.code for p in f.problems] == ["magic-unknown"]
    assert f.problems[0].line == 2


def test_double_percent_and_percent_paren() -> None:
    f = parse_ini("[uwsgi]\na = 100%%\nb = %(x)\n")
    assert (f.last("a"), f.last("b")) == ("100%", "%(x)")
    assert f.problems == []


def test_percent_at_end_of_comment_swallows_next_line() -> None:
    text = "[uwsgi]\n; cpu at 100%\nneed-app = true\nmaster = true\n"
    f = parse_ini(text)
    assert f.last("need-app") is None
    assert [(o.key, o.line) for o in f.options] == [("master", 4)]
    assert [(p.code, p.line) for p in f.problems] == [("magic-newline", 2)]


def test_percent_at_end_of_value_joins_next_line_and_keeps_line_numbers() -> None:
    f = parse_ini("[uwsgi]\nfoo = 50%\nbar = 1\nbaz = 2\n")
    assert [(o.key, o.value, o.line) for o in f.options] == [("foo", "50bar = 1", 2), ("baz", "2", 4)]


def test_percent_as_last_byte_eats_the_terminator() -> None:
    # measured on 2.0.31: magic_sub sees the NUL uwsgi_open_and_read appends
    f = parse_ini("[uwsgi]\na = 5%")
    assert f.last("a") == "5"
    assert [(p.code, p.line) for p in f.problems] == [("magic-unknown", 2)]


def test_magic_applies_to_comments_and_sections_too() -> None:
    f = parse_ini("[uws%qgi]\n; 5%y\na = 1\n")  # %x is the section (2.0): known
    assert f.sections == ["uwsgi"] and f.last("a") == "1"
    assert [(p.code, p.line) for p in f.problems] == [("magic-unknown", 1), ("magic-unknown", 2)]


# --- line syntax ----------------------------------------------------------------------------------------


def test_inline_comments_are_part_of_the_value() -> None:
    assert ini("processes = 2 # number of cores on machine\nsocket = /tmp/x.sock ; c\n") == [
        ("processes", "2 # number of cores on machine", 2),
        ("socket", "/tmp/x.sock ; c", 3),
    ]


def test_comment_lines_only_at_line_start() -> None:
    assert ini("  ; c\n\t# c\nk = v\n") == [("k", "v", 4)]


def test_no_quote_handling() -> None:
    assert ini("a = 'x'\nb = \"y\"\n") == [("a", "'x'", 2), ("b", '"y"', 3)]


def test_split_at_first_equals_and_blanks() -> None:
    assert ini(" key  =  a = b \t\r\nbare\nempty =\n") == [("key", "a = b", 2), ("bare", "", 3), ("empty", "", 4)]


def test_only_space_tab_cr_are_blanks() -> None:
    # \f and \v are no blanks for ini_lstrip, unlike str.strip()
    assert ini("\fkey = v\v\n") == [("\fkey", "v\v", 2)]


def test_crlf_line_endings() -> None:
    assert ini("a = 1\r\nb = 2\r\n") == [("a", "1", 2), ("b", "2", 3)]


def test_repeatable_and_last_wins() -> None:
    f = parse_ini("[uwsgi]\nk = 1\nk = 2\n")
    assert f.all("k") == ["1", "2"]
    assert f.last("k") == "2"
    assert f.lines("k") == [2, 3]


def test_the_file_and_its_resolution_answer_the_same_queries() -> None:
    # One query API before and after the passes: the same names mean the same occurrence.
    f = parse_ini("[uwsgi]\nk = 1\nj = x\nk = $(V)\n")
    r = f.resolve(env={"V": "2"})
    assert (f.first("k"), f.last("k"), f.all("k"), f.lines("k")) == ("1", "$(V)", ["1", "$(V)"], [2, 4])
    assert (r.first("k"), r.last("k"), r.all("k"), r.lines("k")) == ("1", "2", ["1", "2"], [2, 4])
    applied = r.option("k")
    assert f.option("k") == IniOption("k", "$(V)", 4)
    assert applied is not None and (applied.value, applied.raw, applied.line) == ("2", "$(V)", 4)
    assert f.last("nope") is None and r.option("nope") is None and r.all("nope") == []


def test_sections() -> None:
    text = "top = 0\n[other]\na = 1\n[uwsgi]\nb = 2\n[other]\nc = 3\n"
    f = parse_ini(text)
    assert [o.key for o in f.options] == ["b"]
    assert f.sections == ["other", "uwsgi", "other"]
    assert [o.key for o in parse_ini(text, section="other").options] == ["a", "c"]


def test_section_drops_last_char_whatever_it_is() -> None:
    assert parse_ini("[uwsgi\na = 1\n", section="uwsg").last("a") == "1"


def test_no_section() -> None:
    f = parse_ini("socket = /tmp/x.sock\n")
    assert f.options == [] and [p.code for p in f.problems] == ["no-section"]
    # an empty [uwsgi] section is the same for uWSGI (got_section is only set by an option)
    assert [p.code for p in parse_ini("[uwsgi]\n; nothing\n").problems] == ["no-section"]


def test_empty_key_and_nul() -> None:
    f = parse_ini("[uwsgi]\n= v\nk = a\0b\n")
    assert [(o.key, o.value) for o in f.options] == [("", "v"), ("k", "a")]
    assert [p.code for p in f.problems] == ["empty-key"]


def test_includes_and_logic_are_flagged() -> None:
    f = parse_ini("[uwsgi]\ninclude = x.ini\nif-env = FOO\nendif =\n")
    assert [p.code for p in f.problems] == ["not-followed", "not-followed"]


# --- the $ @ % passes -----------------------------------------------------------------------------------


def test_seed_idiom_resolves() -> None:
    f = parse_ini(SEED, magic=SEED_MAGIC)
    r = f.resolve(env={}, at_resolver=fake_exec)
    assert r.last("chdir") == "/srv/sites/service1"
    assert r.last("home") == "/srv/sites/service1/venv-bottle"
    assert r.last("socket") == "/tmp/service1-beta.api.sock"
    assert f.resolve(env={}, at_resolver=fake_exec).last("processes") == "2 # number of cores on machine"
    assert f.expand("%(chdir)/app.py", env={}, at_resolver=fake_exec) == "/srv/sites/service1/app.py"


def test_without_at_resolver_at_is_literal() -> None:
    f = parse_ini(SEED, magic=SEED_MAGIC)
    assert f.resolve(env={}).last("chdir") == f"@(exec://dirname $(realpath {VASSALS}/service1-beta.ini))"


def test_env_pass() -> None:
    f = parse_ini("[uwsgi]\na = $(HOME)/x$(NOPE)\nb = $(EMPTY)|\nc = $()\n")
    r = f.resolve(env={"HOME": "/root", "EMPTY": ""})
    assert (r.first("a"), r.first("b"), r.first("c")) == ("/root/x$(NOPE)", "|", "$()")


def test_env_runs_before_at_and_placeholder() -> None:
    seen: list[str] = []

    def at(spec: str) -> str:
        seen.append(spec)
        return "R"

    f = parse_ini("[uwsgi]\na = @($(D)/f)\nb = %(a)!\n")
    r = f.resolve(env={"D": "/etc"}, at_resolver=at)
    assert seen == ["/etc/f"]
    assert r.first("b") == "R!"


def test_placeholder_first_occurrence_forward_reference_and_unknown() -> None:
    f = parse_ini("[uwsgi]\nx = %(k)-%(later)-%(nope)\nk = 1\nk = 2\nlater = L\n")
    assert f.resolve(env={}).last("x") == "1-L-%(nope)"


def test_placeholder_rescan_skips_index_zero() -> None:
    # measured on 2.0.31: the pass restarts at j = 1 after a replacement, so a reference landing at index 0
    # stays literal while one further right is expanded again.
    r = parse_ini("[uwsgi]\na = %(b)\na2 = y%(b)\nb = %(c)\nc = x\n").resolve(env={})
    assert (r.first("a"), r.first("a2")) == ("%(c)", "yx")


def test_placeholder_math() -> None:
    r = parse_ini(
        "[uwsgi]\nn = 41\nm = %(n + 1)\nm2 = %(n c)\nc = x\nm3 = %(n - 50 * 2)\nm4 = %(+)\nm5 = %(n ++)\n"
        "m6 = %(n / 0)\nm7 = %(n + -5)\nm8 = %(-7 / 2)\nm9 = %( n )\nm10 = %(n * 3 --)\n"
    ).resolve(env={})
    got = [r.first(f"m{i}" if i else "m") for i in (0, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    # %(-7 / 2): "-7" is no number (is_a_number), an unknown option is "" -> 0 / 2 = 0
    assert got == ["42", "41x", "-18", "%(+)", "42", "0", "41", "0", "41", "122"]


def test_nested_parentheses_and_inner_symbol() -> None:
    r = parse_ini("[uwsgi]\nd = %(a(b)c)\nnested = $(X$(HOME))\n").resolve(env={"HOME": "/root"})
    assert (r.first("d"), r.first("nested")) == ("%(a(b)c)", "$(X/root)")


def test_immediate_options_are_not_expanded_but_can_be_referenced() -> None:
    assert "plugin" in IMMEDIATE_OPTIONS
    r = parse_ini("[uwsgi]\npl = %(plugin)\nplugin = $(HOME)\n").resolve(env={"HOME": "/root"})
    assert r.first("pl") == "$(HOME)"


def test_set_placeholder_is_not_expanded_but_set_is() -> None:
    f = parse_ini(
        "[uwsgi]\nset-placeholder = app_root=@(exec://x)\nchdir = %(app_root)\nset = sv=$(HOME)\nb = %(sv)\n"
    )
    r = f.resolve(env={"HOME": "/root"}, at_resolver=lambda spec: "EXPANDED")
    assert r.first("chdir") == "@(exec://x)"
    assert r.first("b") == "/root"
    assert [o.key for o in r.options if o.synthetic] == ["app_root", "sv"]


def test_ini_option_from_argv_is_referencable() -> None:
    assert parse_ini("[uwsgi]\na = %(ini)\n", magic=SEED_MAGIC).resolve(env={}).last("a") == "service1-beta.ini"


def test_self_reference_loop_is_reported_not_hung() -> None:
    r = parse_ini("[uwsgi]\na = x%(a)\n").resolve(env={})
    assert [p.code for p in r.problems] == ["expansion-loop"]


# --- properties -----------------------------------------------------------------------------------------

_SAFE = string.ascii_letters + string.digits + " _-./:,"


@given(st.lists(st.tuples(st.text("abcdefgh-", min_size=1, max_size=8), st.text(_SAFE, max_size=20)), max_size=8))
def test_plain_files_round_trip(pairs: list[tuple[str, str]]) -> None:
    """Text without the special characters reads back exactly what was written (stripped)."""
    text = "[uwsgi]\n" + "".join(f"{k} = {v}\n" for k, v in pairs)
    f = parse_ini(text)
    assert [(o.key, o.value) for o in f.options] == [(k, v.strip(" ")) for k, v in pairs]
    assert [o.line for o in f.options] == list(range(2, len(pairs) + 2))
    assert f.resolve(env={}).options == tuple(f.resolve(env={}).options)


@given(st.text(alphabet=string.printable + "é", max_size=200))
def test_never_crashes_and_lines_are_in_range(text: str) -> None:
    f = parse_ini(text, magic=SEED_MAGIC)
    total = text.count("\n") + 1
    assert all(1 <= o.line <= total for o in f.options)
    assert all(1 <= p.line <= total for p in f.problems)
    assert all("\n" not in o.value for o in f.options)
    f.resolve(env={"HOME": "/h"}, at_resolver=lambda spec: spec.upper())


@given(st.text(alphabet="ab%(\n", max_size=60))
def test_magic_problem_count_matches_deleted_pairs(text: str) -> None:
    """Every reported magic problem is one `%X` pair uWSGI deletes; no other text disappears."""
    f = parse_ini(text)
    magic = [p for p in f.problems if p.code.startswith("magic")]
    # Reconstruct by scanning like magic_sub: count %X pairs with X not in "%(" (the end counts as a NUL).
    text += "\0"
    i, pairs = 0, 0
    while i < len(text):
        if text[i] == "%" and i + 1 < len(text):
            pairs += text[i + 1] not in "%("
            i += 2
        else:
            i += 1
    assert len(magic) == pairs


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from("+-*/"))
def test_math_matches_c_semantics(a: int, b: int, op: str) -> None:
    r = parse_ini(f"[uwsgi]\na = {a}\nb = {b}\nr = %(a {op} b)\n").resolve(env={})
    if op == "+":
        want = a + b
    elif op == "-":
        want = a - b
    elif op == "*":
        want = a * b
    else:
        want = 0 if b == 0 else int(a / b) if abs(a) < 2**52 else a // b
    assert r.first("r") == str(want)


@pytest.mark.parametrize("letter", list("pdsnecovkij"))
def test_every_filled_letter_substitutes(letter: str) -> None:
    f = parse_ini(f"[uwsgi]\nx = <%{letter}>\n", magic=SEED_MAGIC)
    assert f.last("x") == f"<{SEED_MAGIC.table[letter]}>"
    assert f.problems == []


def test_needs_at_resolver_follows_placeholders_transitively() -> None:
    ini = parse_ini(
        "[uwsgi]\nroot = @(exec://pwd)\nbase = %(root)/x\nplain = /tmp\nsocket = %(plain)/%n.sock\n", magic=SEED_MAGIC
    )
    assert ini.needs_at_resolver("%(base)/s.sock")
    assert ini.needs_at_resolver("@(exec://echo hi)")
    assert not ini.needs_at_resolver("%(plain)/s.sock")
    assert not ini.needs_at_resolver("/tmp/%(nope)")


# --- other files and logic blocks, through a real VassalSource --------------------------------------------


def _read(tmp_path: Path, text: str, env: dict[str, str] | None = None, **files: str) -> IniFile:
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    (tmp_path / "v.ini").write_text(text)
    return read_ini("v.ini", cwd=str(tmp_path), env=env or {})


def test_included_options_carry_their_file_and_line(tmp_path: Path) -> None:
    f = _read(tmp_path, "[uwsgi]\na = 1\ninclude = inc.ini\nc = 3\n", **{"inc.ini": "[uwsgi]\n\nb = 2\n"})
    assert [(o.key, o.line, Path(o.file).name if o.file else "") for o in f.options] == [
        ("a", 2, ""), ("include", 3, ""), ("b", 3, "inc.ini"), ("c", 4, ""),
    ]
    assert f.texts[str((tmp_path / "inc.ini").resolve())] == "[uwsgi]\n\nb = 2\n"


def test_open_block_and_recursive_logic(tmp_path: Path) -> None:
    f = _read(tmp_path, "[uwsgi]\nif-env = NOPE\nsocket = x\n")
    assert [o.key for o in f.options] == ["if-env"] and [(p.code, p.line) for p in f.problems] == [("open-logic", 2)]
    f = _read(tmp_path, "[uwsgi]\nif-env = HOME\nfor = a b\nx = 1\n", env={"HOME": "/h"})
    assert [(p.code, p.line) for p in f.problems] == [("fatal", 3)] and "recursive logic" in f.problems[0].message
    assert [o.key for o in f.options] == ["if-env", "for"]  # added, then its handler exits


def test_missing_include_is_fatal_and_stops_reading(tmp_path: Path) -> None:
    f = _read(tmp_path, "[uwsgi]\ninclude = nope.ini\nafter = 1\n")
    assert [(p.code, p.line) for p in f.problems] == [("missing-file", 2)] and f.last("after") is None


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("include = inc.ini:prod", "fatal"),  # no `:section` for include: "unable to load configuration", exit 1
        ("include = app.conf", "fatal"),
        ("inherit = base.cfg", "fatal"),
        ("include = inc.yml", "not-followed"),  # another reader of uWSGI's: not read here
        ("inherit = base.json", "not-followed"),
    ],
)
def test_include_and_inherit_read_by_the_file_name_ending(tmp_path: Path, line: str, code: str) -> None:
    f = _read(tmp_path, f"[uwsgi]\n{line}\nafter = 1\n")
    assert [(p.code, p.line) for p in f.problems] == [(code, 2)], f.problems
    assert (f.last("after") is None) == (code == "fatal" and line.startswith("include"))
